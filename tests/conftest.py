import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)
# The operator package from its folder when it is not installed; an installed (or, under hack/mutation,
# mutated) copy is used as found, never shadowed.
if importlib.util.find_spec("daemonpool_operator") is None:
    sys.path.insert(0, os.path.join(ROOT, "operator"))

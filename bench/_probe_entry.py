"""`worker-runtime probe` with `python -I -S` (no site-packages scan): the Python probe's floor."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from worker_runtime.probe import main  # noqa: E402

sys.exit(main(sys.argv[1:]))

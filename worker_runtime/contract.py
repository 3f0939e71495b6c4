"""The contract between the operator and the worker runtime, in one place.

The operator (``daemonpool_operator.desired``) imports these names to build the
pod; the runtime reads them; the sh probe (``worker-runtime-probe``) cannot
import Python, so a unit test proves it uses the same names and defaults.
Standard library only, no imports at all: the probe path loads it.
"""

ENV_NAME = "DAEMONPOOL_NAME"
ENV_TIMEOUT = "DAEMONPOOL_TIMEOUT_SECONDS"
ENV_MAX_PEERS = "DAEMONPOOL_MAX_PEERS"
ENV_RUN_DIR = "DAEMONPOOL_RUN_DIR"
ENV_HEARTBEAT_FILE = "DAEMONPOOL_HEARTBEAT_FILE"

# /run is tmpfs on hosts and the operator mounts an in-memory emptyDir here in pods.
DEFAULT_RUN_DIR = "/run/daemonpool"
# The cheap exec probe the kubelet runs (POSIX sh, installed with the package).
PROBE_COMMAND = "worker-runtime-probe"

# The port the runtime answers on (/livez, /readyz, /startupz, /state, /metrics) when set.
ENV_PORT = "DAEMONPOOL_PORT"
# Rarely taken: not a well-known port, not in the ephemeral range, not used by common exporters.
DEFAULT_PORT = 9309
# The named container port the kubelet's HTTP probes and the operator's scale-in use.
PORT_NAME = "daemonpool"

# Items a worker runs at once (threads, asyncio tasks); the autoscaler counts slots, not pods. Default 1.
ENV_CAPACITY = "DAEMONPOOL_CAPACITY"
# Recycling: after this many items, or above this resident memory, a worker finishes its item and exits
# cleanly so the kubelet starts a fresh one (Celery's --max-tasks-per-child / --max-memory-per-child).
ENV_MAX_ITEMS = "DAEMONPOOL_MAX_ITEMS"
ENV_MAX_RSS_MIB = "DAEMONPOOL_MAX_RSS_MIB"
# The address the HTTP answers listen on; default "::" (IPv6 and IPv4 where the pod has both), else 0.0.0.0.
ENV_HOST = "DAEMONPOOL_HOST"
# Where the first failing liveness verdict is written, so `kubectl describe pod` shows why the kubelet
# restarted a worker (the pod's terminationMessagePath; Kubernetes' default is this path).
ENV_TERMINATION_LOG = "DAEMONPOOL_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# The secret the operator puts in each worker of a pool: only a caller holding it may drain the worker
# (``POST /drain``, ``Authorization: Bearer <token>``). Unset: draining is off.
ENV_DRAIN_TOKEN = "DAEMONPOOL_DRAIN_TOKEN"
# The words a state file may hold (its first line): "unknown" is `run`'s child that never said.
STATES = ("idle", "busy", "stopping", "unknown")

"""``worker-runtime status | run | watchdog`` (``probe`` lives in probe.py, for speed).

Exit codes:
  0  success (status printed; run: the child's own 0; watchdog: healthy, nothing done)
  1  failure (watchdog: could not end a stale holder or start CMD)
  2  usage error
  3  watchdog: a missing or stale worker was (re)started; run: no free slot
  run otherwise exits with the child's status, 128+N when a signal N ended it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import IO, Any, NoReturn

from . import __version__, _files, _run, probe
from .daemon import DaemonError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ACTED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _env_float(var: str, default: float) -> float:
    raw = os.environ.get(var)
    if not raw:
        return default
    try:
        return _files.positive_seconds(float(raw), var)
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a finite number of seconds > 0") from None


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (nan and inf are refused)."""
    try:
        return _files.positive_seconds(float(text), "seconds")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}") from None


def _name(text: str) -> str:
    if not _files.valid_name(text):
        raise argparse.ArgumentTypeError(f"must be {_files.NAME_RULE}, got {text!r}")
    return text


def _common(p: argparse.ArgumentParser, need_name: bool = False) -> None:
    p.add_argument(
        "--name",
        type=_name,
        default=os.environ.get(_files.ENV_NAME),
        required=need_name and not os.environ.get(_files.ENV_NAME),
        help=f"worker name (default: ${_files.ENV_NAME})",
    )
    p.add_argument(
        "--run-dir", default=None, help=f"run directory (default: ${_files.ENV_RUN_DIR}, else /run/daemonpool)"
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        help=f"heartbeat limit in seconds (default: ${_files.ENV_TIMEOUT}, else 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="worker-runtime", description="Daemon semantics for pool workers: probes, status, run, watchdog."
    )
    parser.add_argument("--version", action="version", version=f"worker-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pr = sub.add_parser("probe", help="exit 0 when healthy, else 1 and one line why")
    pr.add_argument("kind", choices=probe.KINDS)
    _common(pr)

    st = sub.add_parser("status", help="slots, PIDs, heartbeat ages, ready/busy")
    _common(st, need_name=True)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    for cmd, help_ in (
        ("run", "run a non-Python program under the daemon contract"),
        ("watchdog", "for a crontab: respawn a dead or hung worker"),
    ):
        p = sub.add_parser(cmd, help=help_)
        _common(p, need_name=True)
        p.add_argument("--max-peers", type=int, default=None, help=f"slots (default: ${_files.ENV_MAX_PEERS}, else 1)")
        if cmd == "run":
            p.add_argument(
                "--heartbeat",
                choices=_run.MODES,
                default="auto",
                help="how the child counts as alive: auto (run beats until the child beats itself), file, alive, "
                "notify (sd_notify WATCHDOG=1), exec (--check CMD succeeds); default auto",
            )
            p.add_argument("--check", default=None, help="with --heartbeat exec: a shell command; exit 0 is a beat")
            p.add_argument(
                "--check-period",
                type=_seconds,
                default=None,
                help="seconds between checks (default: a third of the timeout, between 1 and 10)",
            )
        if cmd == "watchdog":
            p.add_argument(
                "--grace",
                type=_seconds,
                default=10.0,
                help="seconds between SIGTERM and SIGKILL for a stale holder (default 10)",
            )
            p.add_argument("--log", default=None, help="append CMD's output here (default: discard)")
        p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return parser


def _settings(args: argparse.Namespace) -> tuple[float, int, str]:
    timeout = args.timeout if args.timeout is not None else _env_float(_files.ENV_TIMEOUT, _files.DEFAULT_TIMEOUT)
    max_peers = getattr(args, "max_peers", None)
    if max_peers is None:
        max_peers = int(os.environ.get(_files.ENV_MAX_PEERS) or _files.DEFAULT_MAX_PEERS)
    run_dir = args.run_dir or _files.default_run_dir()
    if _files.is_fallback(run_dir) and os.path.lexists(run_dir):
        try:
            _files.ensure_private_dir(run_dir)
        except OSError as exc:
            raise DaemonError(
                f"run directory {run_dir!r} is not safe: {exc.strerror}; remove it if it is not yours, "
                f"or set XDG_RUNTIME_DIR or {_files.ENV_RUN_DIR}"
            ) from None
    return timeout, max_peers, run_dir


def _cmd(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error(
            f"{args.command} needs a command after --, e.g. worker-runtime {args.command} --name N -- CMD ARGS"
        )
    return list(cmd)


def cmd_status(args: argparse.Namespace) -> int:
    timeout, _, run_dir = _settings(args)
    rows = probe.status(run_dir, args.name)
    if args.json:
        print(json.dumps({"name": args.name, "run_dir": run_dir, "timeout": timeout, "slots": rows}))
        return EXIT_OK
    if not rows:
        print(f"{args.name}: no slots in {run_dir}")
        return EXIT_OK
    print(f"{'SLOT':<5}{'PID':<9}{'HELD':<6}{'HEARTBEAT':<12}{'READY':<7}STATE")
    for r in rows:
        age = "-" if r["heartbeat_age"] is None else f"{r['heartbeat_age']:.1f}s"
        # The worker's own limit, as it wrote it into its beat; --timeout or the environment when it did not.
        own = (
            None if args.timeout else _files.beat_timeout(_files.slot_path(run_dir, args.name, r["slot"], "heartbeat"))
        )
        if r["heartbeat_age"] is not None and _files.beat_age_problem(r["heartbeat_age"], own or timeout):
            age += " STALE"
        print(
            f"{r['slot']:<5}{r['pid'] or '-':<9}{'yes' if r['held'] else 'no':<6}{age:<12}"
            f"{'yes' if r['ready'] else 'no':<7}{r['state'] or '-'}"
        )
    return EXIT_OK


def cmd_run(args: argparse.Namespace, cmd: list[str]) -> int:
    timeout, max_peers, run_dir = _settings(args)
    runner = _run.Runner(
        args.name,
        cmd,
        timeout=timeout,
        max_peers=max_peers,
        run_dir=run_dir,
        mode=args.heartbeat,
        check=args.check,
        check_period=args.check_period,
    )
    return runner.run()


def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    out[int(entry)] = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def _descendants(pids: set[int]) -> set[int]:
    parents = _ppids()
    found, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def lock_holders(pid_path: str) -> set[int]:
    """PIDs of the processes whose open file holds the flock on ``pid_path``.

    The PID written in the file is a claim anybody can write; the kernel's
    record of who holds the lock (``lock:`` lines of /proc/PID/fdinfo, shown
    only for the open file that owns the lock) is not. A forked child that
    inherited the descriptor is found too, which the PID file never names.
    """
    try:
        st = os.stat(pid_path)
    except FileNotFoundError:
        return set()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue  # gone, or another user's (then we may not signal it anyway)
        for fd in fds:
            try:
                fst = os.stat(f"/proc/{entry}/fd/{fd}")
                if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                    continue
                with open(f"/proc/{entry}/fdinfo/{fd}") as f:
                    info = f.read()
            except OSError:
                continue
            if any("FLOCK" in line and "WRITE" in line for line in info.splitlines() if line.startswith("lock:")):
                found.add(int(entry))
    return found


def _kill_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _wait_released(pid_path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not probe.holder(pid_path)[0]:
            return True
        time.sleep(0.05)
    return not probe.holder(pid_path)[0]


def _end_stale_holder(args: argparse.Namespace, slot: dict[str, Any], pid_path: str) -> str | None:
    """SIGTERM the real holder, SIGKILL it and everything it started after the grace; None when released."""
    holders = lock_holders(pid_path)
    if not holders:
        if not probe.holder(pid_path)[0]:
            return None  # released meanwhile
        return (
            f"cannot tell which process holds {pid_path} (another user's?): "
            f"run the watchdog as the worker's user; nothing was signalled"
        )
    print(
        f"watchdog: {args.name} slot {slot['slot']} (pid {' '.join(map(str, sorted(holders)))}) is stale "
        f"(heartbeat {slot['heartbeat_age']}s, limit {args.timeout_s:g}s): SIGTERM"
    )
    try:
        _kill_all(holders, signal.SIGTERM)
        if _wait_released(pid_path, args.grace):
            return None
        # Collected before the kill: once the holder is gone its children are
        # re-parented and no longer look like its own.
        tree = holders | lock_holders(pid_path) | _descendants(holders)
        print(f"watchdog: still held after {args.grace:g}s: SIGKILL to pid(s) {' '.join(map(str, sorted(tree)))}")
        _kill_all(tree, signal.SIGKILL)
        for pid in tree:  # `run` puts its child in a group of its own: end the whole group
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    except PermissionError as exc:
        return f"cannot end pid(s) {sorted(holders)}: {exc.strerror}"
    if not _wait_released(pid_path, 5.0):
        return f"{pid_path} is still held by pid(s) {sorted(lock_holders(pid_path)) or '?'}"
    return None


def cmd_watchdog(args: argparse.Namespace, cmd: list[str]) -> int:
    timeout, max_peers, run_dir = _settings(args)
    args.timeout_s = timeout
    out: int | IO[bytes] = subprocess.DEVNULL
    if args.log:
        try:
            out = open(args.log, "ab")
        except OSError as exc:
            print(f"watchdog: cannot open --log {args.log!r}: {exc.strerror}; pick a writable file", file=sys.stderr)
            return EXIT_FAIL
    try:
        healthy = 0
        for s in probe.status(run_dir, args.name):
            if not s["held"]:
                continue
            age = s["heartbeat_age"]
            if age is not None and _files.beat_age_problem(age, timeout) is None:
                healthy += 1
                continue
            failure = _end_stale_holder(args, s, _files.slot_path(run_dir, args.name, s["slot"], "pid"))
            if failure:
                print(f"watchdog: {failure}", file=sys.stderr)
                return EXIT_FAIL
        missing = max_peers - healthy
        if missing <= 0:
            return EXIT_OK
        for _ in range(missing):
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
            except OSError as exc:
                print(f"watchdog: cannot start {cmd[0]!r}: {exc.strerror}", file=sys.stderr)
                return EXIT_FAIL
            print(f"watchdog: started {' '.join(cmd)} (pid {proc.pid}) for {args.name}")
    finally:
        if not isinstance(out, int):
            out.close()
    return EXIT_ACTED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "probe":
            return probe.main(
                [args.kind]
                + [
                    x
                    for k, v in (("--name", args.name), ("--run-dir", args.run_dir), ("--timeout", args.timeout))
                    if v is not None
                    for x in (k, str(v))
                ]
            )
        if args.command == "status":
            return cmd_status(args)
        cmd = _cmd(parser, args)
        if args.command == "run":
            return cmd_run(args, cmd)
        return cmd_watchdog(args, cmd)
    except (DaemonError, ValueError) as exc:
        print(f"worker-runtime {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL

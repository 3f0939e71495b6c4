"""``worker-runtime status | run | watchdog`` (``probe`` lives in probe.py, for speed).

Exit codes:
  0  success (status printed; run: the child's own 0; watchdog: healthy, nothing done)
  1  failure (watchdog: could not end a stale holder or start CMD)
  2  usage error
  3  watchdog: a missing or stale worker was (re)started; run: no free slot
  run otherwise exits with the child's status, 128+N when a signal N ended it.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from . import _files, probe
from .daemon import Daemon, DaemonError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ACTED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _env_float(var, default):
    raw = os.environ.get(var)
    return float(raw) if raw else default


def _common(p, need_name=False):
    p.add_argument("--name", default=os.environ.get(_files.ENV_NAME), required=need_name and not os.environ.get(_files.ENV_NAME),
                   help=f"worker name (default: ${_files.ENV_NAME})")
    p.add_argument("--run-dir", default=None, help=f"run directory (default: ${_files.ENV_RUN_DIR}, else /run/daemonpool)")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"heartbeat limit in seconds (default: ${_files.ENV_TIMEOUT}, else 30)")


def build_parser():
    parser = _Parser(prog="worker-runtime", description="Daemon semantics for pool workers: probes, status, run, watchdog.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pr = sub.add_parser("probe", help="exit 0 when healthy, else 1 and one line why")
    pr.add_argument("kind", choices=probe.KINDS)
    _common(pr)

    st = sub.add_parser("status", help="slots, PIDs, heartbeat ages, ready/busy")
    _common(st, need_name=True)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    for cmd, help_ in (("run", "run a non-Python program under the daemon contract"),
                       ("watchdog", "for a crontab: respawn a dead or hung worker")):
        p = sub.add_parser(cmd, help=help_)
        _common(p, need_name=True)
        p.add_argument("--max-peers", type=int, default=None,
                       help=f"slots (default: ${_files.ENV_MAX_PEERS}, else 1)")
        if cmd == "watchdog":
            p.add_argument("--grace", type=float, default=10.0,
                           help="seconds between SIGTERM and SIGKILL for a stale holder (default 10)")
            p.add_argument("--log", default=None, help="append CMD's output here (default: discard)")
        p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return parser


def _settings(args):
    timeout = args.timeout if args.timeout is not None else _env_float(_files.ENV_TIMEOUT, _files.DEFAULT_TIMEOUT)
    max_peers = getattr(args, "max_peers", None)
    if max_peers is None:
        max_peers = int(os.environ.get(_files.ENV_MAX_PEERS) or _files.DEFAULT_MAX_PEERS)
    run_dir = args.run_dir or _files.default_run_dir()
    return timeout, max_peers, run_dir


def _cmd(parser, args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error(f"{args.command} needs a command after --, e.g. worker-runtime {args.command} --name N -- CMD ARGS")
    return cmd


def cmd_status(args) -> int:
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
        if r["heartbeat_age"] is not None and r["heartbeat_age"] > timeout:
            age += " STALE"
        print(f"{r['slot']:<5}{r['pid'] or '-':<9}{'yes' if r['held'] else 'no':<6}{age:<12}"
              f"{'yes' if r['ready'] else 'no':<7}{r['state'] or '-'}")
    return EXIT_OK


def cmd_run(args, cmd) -> int:
    timeout, max_peers, run_dir = _settings(args)
    child = None

    def forward(signum):
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    forwarded = {s: forward for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)}
    d = Daemon(args.name, timeout=timeout, max_peers=max_peers, run_dir=run_dir, signal_map=forwarded)
    if not d.start():
        print(f"worker-runtime run: all {max_peers} slot(s) of {args.name!r} in {run_dir} are held by live processes",
              file=sys.stderr)
        return EXIT_ACTED
    try:
        env = dict(os.environ, **{
            _files.ENV_HEARTBEAT_FILE: d.heartbeat_file,
            _files.ENV_NAME: args.name,
            _files.ENV_RUN_DIR: run_dir,
            _files.ENV_TIMEOUT: f"{timeout:g}",
        })
        try:
            child = subprocess.Popen(cmd, env=env)
        except OSError as exc:
            print(f"worker-runtime run: cannot start {cmd[0]!r}: {exc.strerror}", file=sys.stderr)
            return 127
        rc = child.wait()
    finally:
        d.stop()
    return 128 - rc if rc < 0 else rc


def _wait_released(pid_path, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not probe.holder(pid_path)[0]:
            return True
        time.sleep(0.05)
    return not probe.holder(pid_path)[0]


def cmd_watchdog(args, cmd) -> int:
    timeout, max_peers, run_dir = _settings(args)
    healthy = 0
    for s in probe.status(run_dir, args.name):
        if not s["held"]:
            continue
        if s["heartbeat_age"] is not None and s["heartbeat_age"] <= timeout:
            healthy += 1
            continue
        pid_path = _files.slot_path(run_dir, args.name, s["slot"], "pid")
        print(f"watchdog: {args.name} slot {s['slot']} (pid {s['pid']}) is stale "
              f"(heartbeat {s['heartbeat_age']}s, limit {timeout:g}s): SIGTERM")
        try:
            os.kill(s["pid"], signal.SIGTERM)
            if not _wait_released(pid_path, args.grace):
                print(f"watchdog: pid {s['pid']} still holds the slot after {args.grace:g}s: SIGKILL")
                os.kill(s["pid"], signal.SIGKILL)
                if not _wait_released(pid_path, 5.0):
                    print(f"watchdog: pid {s['pid']} did not release the slot", file=sys.stderr)
                    return EXIT_FAIL
        except ProcessLookupError:
            pass
        except (PermissionError, TypeError) as exc:
            print(f"watchdog: cannot end pid {s['pid']}: {exc}", file=sys.stderr)
            return EXIT_FAIL
    missing = max_peers - healthy
    if missing <= 0:
        return EXIT_OK
    out = open(args.log, "ab") if args.log else subprocess.DEVNULL
    try:
        for _ in range(missing):
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
            except OSError as exc:
                print(f"watchdog: cannot start {cmd[0]!r}: {exc.strerror}", file=sys.stderr)
                return EXIT_FAIL
            print(f"watchdog: started {' '.join(cmd)} (pid {proc.pid}) for {args.name}")
    finally:
        if args.log:
            out.close()
    return EXIT_ACTED


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "probe":
            return probe.main([args.kind] + [x for k, v in (("--name", args.name), ("--run-dir", args.run_dir),
                                                                ("--timeout", args.timeout)) if v is not None for x in (k, str(v))])
        if args.timeout is not None and args.timeout <= 0:
            parser.error(f"--timeout must be > 0, got {args.timeout:g}")
        if args.command == "status":
            return cmd_status(args)
        cmd = _cmd(parser, args)
        if args.command == "run":
            return cmd_run(args, cmd)
        return cmd_watchdog(args, cmd)
    except (DaemonError, ValueError) as exc:
        print(f"worker-runtime {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL

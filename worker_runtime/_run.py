"""``worker-runtime run -- CMD``: an unmodified program under the daemon contract.

``run`` holds the slot, answers the probes and forwards signals; how it knows the child is alive is the
heartbeat mode (``--heartbeat``):

    auto    (default) ``run`` beats while the child lives, until the child shows it beats itself (it
            touches $DAEMONPOOL_HEARTBEAT_FILE, or sends WATCHDOG=1): from then on only its own beats count
    file    only the child's touches of $DAEMONPOOL_HEARTBEAT_FILE count
    alive   the child being alive is the beat (for programs that cannot beat: a hang goes unseen)
    notify  systemd's sd_notify: WATCHDOG=1 beats, READY=1 makes it ready (not before), STOPPING=1 stopping
    exec    ``--check CMD`` (run by sh) every ``--check-period`` seconds: exit 0 within the period beats

In every mode ``run`` serves ``$NOTIFY_SOCKET`` for the child: ``READY=1``, ``STOPPING=1``, ``STATUS=``
(shown in ``/state``) and ``X_DAEMONPOOL_INFLIGHT=N`` (items in flight: busy or idle) are understood. A
child that never says how many items it has is ``unknown``, never ``idle``: the operator's scale-in does
not take it for a free worker.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from . import _files, _notify
from .daemon import Daemon

MODES = ("auto", "file", "alive", "notify", "exec")
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
STOPS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)
EXIT_NO_SLOT = 3
# AF_UNIX paths are limited to 108 bytes; longer run directories use the abstract namespace.
_SUN_PATH_MAX = 107


def spawn_in_own_group(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
    """Start CMD in a process group of its own: a signal sent to our group (Ctrl-C, ``kill -TERM -PGID``)
    reaches the child once, forwarded by us, not twice; and a watchdog can end the child's whole group."""
    if sys.version_info >= (3, 11):
        return subprocess.Popen(cmd, env=env, process_group=0, **kw)
    return subprocess.Popen(cmd, env=env, preexec_fn=os.setpgrp, **kw)  # noqa: PLW1509 (3.10 has no process_group)


class Runner:
    """One ``run``: the Daemon, the child, the notify socket and the heartbeat policy."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        *,
        timeout: float,
        max_peers: int,
        run_dir: str,
        mode: str = "auto",
        check: str | None = None,
        check_period: float | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"--heartbeat must be one of {', '.join(MODES)}, got {mode!r}")
        if (mode == "exec") != (check is not None):
            raise ValueError("--check CMD goes with --heartbeat exec (and --heartbeat exec needs --check CMD)")
        self.cmd, self.mode, self.check = cmd, mode, check
        self.check_period = check_period or max(1.0, min(10.0, timeout / 3))
        self.child: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []  # signals that came before the child existed: delivered once it does
        self.d = Daemon(
            name,
            timeout=timeout,
            max_peers=max_peers,
            run_dir=run_dir,
            signal_map={s: self.forward for s in FORWARDED},
        )
        self.sock: Any = None
        self.sock_path: str | None = None
        self.our_beat: int | None = None  # mtime_ns of the last beat we wrote (auto: someone else's differs)
        self.checking: subprocess.Popen[bytes] | None = None
        self.check_started = 0.0
        self.sigchld_r, self.sigchld_w = os.pipe()
        os.set_blocking(self.sigchld_w, False)

    def forward(self, signum: int) -> None:
        if self.child is None:
            self.pending.append(signum)
        elif self.child.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.pid, signum)

    def _on_sigchld(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            os.write(self.sigchld_w, b"c")

    # -- the steps ------------------------------------------------------------
    def run(self) -> int:
        if not self.d.start():
            print(
                f"worker-runtime run: all {self.d.max_peers} slot(s) of {self.d.name!r} in {self.d.run_dir} are held "
                f"by live processes",
                file=sys.stderr,
            )
            return EXIT_NO_SLOT
        old_chld = signal.signal(signal.SIGCHLD, self._on_sigchld)
        try:
            stop = next((s for s in self.pending if s in STOPS), None)
            if stop is not None:
                return 128 + stop  # asked to stop before the child started: do not start it
            self.d.report_inflight(None)
            if self.mode == "notify":
                self.d.set_ready(False)  # Type=notify: ready once the program says READY=1
            self._open_socket()
            try:
                self.child = spawn_in_own_group(self.cmd, self._child_env())
            except OSError as exc:
                print(f"worker-runtime run: cannot start {self.cmd[0]!r}: {exc.strerror}", file=sys.stderr)
                return 127
            while self.pending:  # a signal during the spawn: forward it now
                self.forward(self.pending.pop(0))
            self._mark_our_beat()
            rc = self._supervise()
        finally:
            signal.signal(signal.SIGCHLD, old_chld)
            self._close()
            self.d.stop()
        return 128 - rc if rc < 0 else rc

    def _open_socket(self) -> None:
        path = _files.slot_path(self.d.run_dir, self.d.name, self.d.slot or 0, "notify")
        if len(path.encode()) > _SUN_PATH_MAX:
            self.sock_path = f"@daemonpool/{self.d.name}.{self.d.slot}.{os.getpid()}"
            self.sock = _notify.listen_abstract(self.sock_path[1:])
        else:
            self.sock_path = path
            self.sock = _notify.listen(path)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                _files.ENV_HEARTBEAT_FILE: self.d.heartbeat_file or "",
                _files.ENV_NAME: self.d.name,
                _files.ENV_RUN_DIR: self.d.run_dir,
                _files.ENV_TIMEOUT: f"{self.d.timeout:g}",
                _notify.ENV_SOCKET: self.sock_path or "",
                # systemd's contract: ping at least every WATCHDOG_USEC microseconds (libsystemd halves it).
                "WATCHDOG_USEC": str(int(self.d.timeout * 1_000_000)),
            }
        )
        env.pop("WATCHDOG_PID", None)
        return env

    def _supervise(self) -> int:
        assert self.child is not None
        while True:
            rc = self._reap()
            if rc is not None:
                return rc
            watch = [self.sigchld_r] + ([self.sock] if self.sock is not None else [])
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select(watch, [], [], self.d.beat_interval)
            if self.sigchld_r in readable:
                with contextlib.suppress(OSError):
                    os.read(self.sigchld_r, 512)
            if self.sock in readable:
                self._read_messages()
            self._tick()

    def _reap(self) -> int | None:
        """Reap every child that ended (as PID 1 we inherit orphans); the program's exit code once it ended."""
        assert self.child is not None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return self.child.returncode if self.child.returncode is not None else self.child.wait()
            if pid == 0:
                return None
            code = os.waitstatus_to_exitcode(status)
            if pid == self.child.pid:
                self.child.returncode = code
                return code
            if self.checking is not None and pid == self.checking.pid:
                self.checking.returncode = code
                if code == 0:
                    self._beat()

    def _read_messages(self) -> None:
        while True:
            try:
                data = self.sock.recv(_notify.MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            msg = _notify.parse(data)
            if msg.get("READY") == "1":
                self.d.set_ready(True)
            if "STATUS" in msg:
                self.d.set_status(msg["STATUS"])
            if _notify.INFLIGHT in msg:
                raw = msg[_notify.INFLIGHT]
                self.d.report_inflight(int(raw) if raw.isdigit() else None)
            if msg.get("STOPPING") == "1":
                self.d.request_stop(reason="the program said STOPPING=1")
            if msg.get("WATCHDOG") == "1" and self.mode in ("auto", "notify"):
                self.mode = "notify"  # auto: the program beats itself; from now on only its beats count
                self._beat()

    def _tick(self) -> None:
        if self.mode in ("auto", "alive"):
            if self.mode == "auto" and self._child_touched_the_file():
                self.mode = "file"
                return
            self._beat()
        elif self.mode == "exec":
            self._run_check()

    def _beat(self) -> None:
        self.d.beat()
        self._mark_our_beat()

    def _mark_our_beat(self) -> None:
        with contextlib.suppress(OSError, TypeError):
            self.our_beat = os.stat(self.d.heartbeat_file or "").st_mtime_ns

    def _child_touched_the_file(self) -> bool:
        try:
            now = os.stat(self.d.heartbeat_file or "").st_mtime_ns
        except (OSError, TypeError):
            return False
        return self.our_beat is not None and now != self.our_beat

    def _run_check(self) -> None:
        now = time.monotonic()
        if self.checking is not None and self.checking.returncode is None:
            if now - self.check_started > self.check_period:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.checking.pid, signal.SIGKILL)  # too slow: no beat from this one
            return
        if self.checking is None or now - self.check_started >= self.check_period:
            assert self.check is not None
            self.checking = spawn_in_own_group(
                ["/bin/sh", "-c", self.check], dict(os.environ), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
            self.check_started = now

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            if self.sock_path and not self.sock_path.startswith("@"):
                with contextlib.suppress(OSError):
                    os.unlink(self.sock_path)
        for fd in (self.sigchld_r, self.sigchld_w):
            with contextlib.suppress(OSError):
                os.close(fd)

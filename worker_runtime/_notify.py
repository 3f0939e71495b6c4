"""systemd's ``sd_notify(3)`` protocol, both ends. Standard library only.

A message is one datagram on the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` names the
abstract namespace), newline-separated ``KEY=VALUE`` assignments: ``READY=1``, ``WATCHDOG=1``,
``STOPPING=1``, ``STATUS=text``, ``MAINPID=N``. Unknown keys are ignored by both ends, as systemd does;
``X_DAEMONPOOL_INFLIGHT=N`` is ours (items in flight, so ``worker-runtime run`` can say busy or idle).
"""

from __future__ import annotations

import contextlib
import os
import socket

ENV_SOCKET = "NOTIFY_SOCKET"
# Our own key (sd_notify lets services add keys; systemd ignores those it does not know).
INFLIGHT = "X_DAEMONPOOL_INFLIGHT"
# A datagram larger than this is not one we sent or one systemd would take (it reads up to 4 KiB of text).
MAX_MESSAGE = 4096


def address(raw: str) -> str | bytes:
    """The socket address for a ``$NOTIFY_SOCKET`` value: ``@name`` is the abstract namespace."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Sends ``sd_notify`` messages when ``$NOTIFY_SOCKET`` is set; does nothing otherwise. Never raises:
    a supervisor that went away must not take the worker with it."""

    def __init__(self, raw: str | None) -> None:
        self._addr = address(raw) if raw else None
        self._sock: socket.socket | None = None
        self.failed: str | None = None  # the first error, for the worker's log

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, **fields: object) -> bool:
        if self._addr is None:
            return False
        text = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(text, self._addr)
            return True
        except OSError as exc:
            if self.failed is None:
                self.failed = f"sd_notify to {os.environ.get(ENV_SOCKET)!r} failed: {exc.strerror or exc}"
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def parse(data: bytes) -> dict[str, str]:
    """The assignments of one datagram; lines without ``=`` are skipped, the last value of a key wins."""
    out: dict[str, str] = {}
    for line in data[:MAX_MESSAGE].decode(errors="replace").split("\n"):
        key, eq, value = line.partition("=")
        if eq and key:
            out[key] = value
    return out


def listen(path: str) -> socket.socket:
    """A datagram socket at ``path`` for a child's ``sd_notify`` messages (non-blocking, close-on-exec)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(path)
    sock.setblocking(False)
    return sock


def listen_abstract(name: str) -> socket.socket:
    """Like ``listen`` in Linux's abstract namespace (``@name``): for run directories too long for a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    return sock

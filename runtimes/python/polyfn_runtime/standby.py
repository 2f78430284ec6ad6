"""Call mode's standby: a worker started before it has a function.

polyfn's host starts ``polyfn-python -c FILE --standby`` with its standard
input a Unix socket to the host, and the runtime's environment alone. The
worker imports what call mode needs, then:

1. writes ``ready\\n``;
2. reads one line, a JSON object ``{"env": {NAME: VALUE, ...}}``: its whole
   environment, as a worker started for the function gets it
   (``BAETYL_SERVICE_INSTANCE_ADDRESS`` included). By then the host has
   written FILE;
3. replaces its environment with it and runs call mode with FILE as at a
   normal start;
4. once it listens, replaces its standard input with ``/dev/null`` and
   writes ``serving\\n``.

End of input before the line (the host stopped without binding it), or
SIGTERM or SIGINT while waiting, exits with status 0. See docs/protocols.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
from types import FrameType
from typing import NoReturn

READY = b"ready\n"
SERVING = b"serving\n"
# The most the host's line may hold: an environment larger than Linux
# passes to a new process could not have started a worker either.
MAX_LINE = 4 << 20
HANDSHAKE_FD = 0


class HandshakeError(Exception):
    """The host's line is not a standby claim."""


def warm() -> None:
    """Import what call mode runs with, so that a claim costs none of it."""
    import grpc.aio  # noqa: F401
    import yaml  # noqa: F401

    from . import server  # noqa: F401  grpc, the Baetyl protocol, the loader
    from .protos.baetyl import function_pb2  # noqa: F401

    with contextlib.suppress(ImportError):
        from grpc import _server  # noqa: F401  what grpc.server() imports on first use


def claim(fd: int = HANDSHAKE_FD) -> dict[str, str] | None:
    """Say ready and wait for the host's claim; return the environment, or ``None`` at end of input."""
    previous = {signum: signal.signal(signum, _stop_waiting) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _read_claim(fd)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_waiting(signum: int, frame: FrameType | None) -> NoReturn:
    leave()


def leave() -> NoReturn:
    """Exit 0 at once: nothing ran that needs the interpreter's clean-up (which takes up to a second with grpc)."""
    from . import logs

    logs.flush_all()
    os._exit(0)


def _read_claim(fd: int) -> dict[str, str] | None:
    # The kernel may deliver SIGTERM to a thread other than the main one
    # (grpc's), whose read would then go on blocking and never run the
    # handler: the wait watches the signal wake-up pipe too.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    previous = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        os.write(fd, READY)
        buf = bytearray()
        while b"\n" not in buf:
            # The timeout returns to the interpreter now and then, which
            # runs a pending handler whatever thread took the signal.
            readable, _, _ = select.select([fd, wake_r], [], [], 1.0)
            # A signal's handler has run by now (it exits).
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            if fd not in readable:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            buf += chunk
            if len(buf) > MAX_LINE:
                raise HandshakeError(f"the host's line is longer than {MAX_LINE} bytes")
    finally:
        signal.set_wakeup_fd(previous)
        os.close(wake_r)
        os.close(wake_w)
    line = bytes(buf).split(b"\n", 1)[0]
    try:
        message = json.loads(line)
    except ValueError as err:
        raise HandshakeError(f"the host's line is not JSON: {err}") from None
    env = message.get("env") if isinstance(message, dict) else None
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise HandshakeError('the host\'s line has no "env" object of strings')
    return env


def apply(env: dict[str, str]) -> None:
    """Make ``env`` the process's whole environment."""
    os.environ.clear()
    os.environ.update(env)


def serving(fd: int = HANDSHAKE_FD) -> None:
    """Give standard input back to ``/dev/null``, then tell the host the worker listens."""
    handshake = os.dup(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
    try:
        with contextlib.suppress(OSError):  # the host gave up on the handshake; it sees the worker listen anyway
            os.write(handshake, SERVING)
    finally:
        os.close(handshake)

"""Process helpers shared by the local stack: free ports, child processes that cannot outlive their
parent, and stopping a process group politely, then firmly.

Every child the stack starts gets its own session (so a terminal's Ctrl-C reaches only the stack's
front process, which then stops the children in order) and ``PR_SET_PDEATHSIG`` (so even a
``kill -9`` of the front process takes the children with it: nothing is left running).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

LOCALHOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.2) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_kwargs() -> dict[str, Any]:
    """Popen/create_subprocess_exec keyword arguments for a child that dies with its parent."""
    return {"start_new_session": True, "preexec_fn": _die_with_parent}


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            **child_kwargs(),
        )
    finally:
        log.close()


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (or to the process alone)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, grace: float = 10.0, wait: Callable[[float], bool] | None = None) -> None:
    """SIGTERM the group of ``pid``, wait up to ``grace`` seconds, then SIGKILL it."""
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    is_gone = wait or (lambda _timeout: not alive(pid))
    while time.monotonic() < deadline:
        if is_gone(0.05):
            return
        time.sleep(0.05)
    signal_group(pid, signal.SIGKILL)


def stop_popen(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a child started with :func:`spawn` and reap it."""
    if process.poll() is not None:
        return

    def gone(timeout: float) -> bool:
        try:
            process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    stop_pid(process.pid, grace, wait=gone)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    # The leader is gone; make sure nothing else of its group lingers.
    signal_group(process.pid, signal.SIGKILL)

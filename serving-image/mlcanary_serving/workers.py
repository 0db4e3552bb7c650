"""Several server processes on one port (``MLCANARY_WORKERS``): a pod with N CPUs serves with N.

The parent (``python -m mlcanary_serving`` with ``MLCANARY_WORKERS`` > 1) loads nothing: it starts
the workers (the same command, ``MLCANARY_WORKER_INDEX`` set), restarts one that dies, and passes
SIGTERM on for a graceful stop. Each worker binds its own listening socket with ``SO_REUSEPORT``,
so the kernel spreads connections over the workers; one shared socket would let the fastest
worker accept nearly every connection. Metrics are the pod's totals (``metrics.exposition``).
Feedback by request id reaches the worker that remembers the answer: each worker also listens on
a Unix socket in the metrics directory (``worker-<pid>.sock``, mode 0600), and a worker that does
not know a request id asks the others there (``ask_peers``). Stdlib only.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import signal
import socket
import subprocess
import time
from types import FrameType

WORKER_INDEX = "MLCANARY_WORKER_INDEX"

log = logging.getLogger("mlcanary_serving")


def is_worker() -> bool:
    return os.environ.get(WORKER_INDEX) is not None


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that the other workers bind too (the kernel balances connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def supervise(workers: int, command: list[str], grace_s: float = 15.0, restart_delay_s: float = 1.0) -> int:
    """Run ``workers`` copies of ``command`` until SIGTERM/SIGINT; restart any that exits."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    died: dict[int, float] = {}

    def start(i: int) -> None:
        procs[i] = subprocess.Popen(command, env={**os.environ, WORKER_INDEX: str(i)})

    for i in range(workers):
        start(i)
    while not stopping:
        time.sleep(0.2)
        for i, p in list(procs.items()):
            code = p.poll()
            if code is None or stopping:
                continue
            now = time.monotonic()
            if i not in died:
                log.error("worker %d (pid %d) exited with status %s; restarting it", i, p.pid, code)
                died[i] = now
            if now - died[i] >= restart_delay_s:  # not in a tight loop if it cannot start
                del died[i]
                start(i)
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return 0


def peer_socket(directory: str) -> socket.socket:
    """This worker's Unix socket, where the other workers forward feedback they cannot match."""
    path = os.path.join(directory, f"worker-{os.getpid()}.sock")
    if os.path.exists(path):
        os.remove(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


async def ask_peers(
    directory: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float = 2.0
) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """POST ``body`` to ``path`` on every other worker; the first answer that is not a 404, else None."""
    own = os.path.join(directory, f"worker-{os.getpid()}.sock")
    for sock_path in sorted(glob.glob(os.path.join(glob.escape(directory), "worker-*.sock"))):
        if sock_path == own:
            continue
        try:
            answer = await asyncio.wait_for(_post_unix(sock_path, path, body, headers), timeout_s)
        except (TimeoutError, OSError, ValueError):
            continue  # a worker gone or restarting: its memory went with it
        if answer[0] != 404:
            return answer
    return None


async def _post_unix(
    sock_path: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    reader, writer = await asyncio.open_unix_connection(sock_path)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: worker\r\nconnection: close\r\ncontent-length: {len(body)}\r\n"
            f"{head}\r\n".encode("latin-1")
            + body
        )
        raw = await reader.read()
    finally:
        writer.close()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    status = int(lines[0].split()[1])
    out: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        out.append((k.strip().lower(), v.strip()))
    return status, payload, out

"""redis-server as a process of the test run, stopped and started on one port."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.support.net import LOOPBACK, free_port


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """One PING over a raw socket, so readiness checks hold no client or pool of their own."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process that can be stopped and started again on the same port.

    Nothing is persisted (`--save ''`, `--appendonly no`), so a restart comes back empty, just
    like a crashed cache node.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int,
        *,
        host: str = LOOPBACK,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = host
        self.port = port
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def logfile(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def command(self) -> list[str]:
        return [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--logfile", str(self.logfile),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        """Launch the process and return once it answers PING."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not redis_ping(self.host, self.port):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {code}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.stop(kill=True)
                raise TimeoutError(
                    f"redis-server on port {self.port} did not answer PING within {timeout}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the process; `kill=True` sends SIGKILL, like a crash, instead of SIGTERM."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A sync client for this server; the caller closes it (use it as a context manager)."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def start_redis_server(
    binary: str,
    workdir: Path,
    *,
    extra_args: tuple[str, ...] = (),
    attempts: int = 3,
) -> RedisServer:
    """Start a RedisServer on a free port, trying a new port if another process took it first."""
    error: Exception | None = None
    for _ in range(attempts):
        server = RedisServer(binary, workdir, free_port(), extra_args=extra_args)
        try:
            server.start()
        except (RuntimeError, TimeoutError) as exc:
            error = exc
            continue
        return server
    raise RuntimeError(f"could not start redis-server after {attempts} attempts") from error

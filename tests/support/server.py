"""`spork serve` as a real process in its own process group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.cli import spork_env
from tests.support.net import LOOPBACK


class SporkServer:
    """`python -m spork_cli serve` as a real process in its own process group.

    stdout and stderr go to files in ``workdir`` (never pipes, which could fill up and stall
    the server). ``start()`` returns once the admin listener reports ready and the request
    port accepts connections; ``kill()`` ends the whole group and is safe to call twice.
    """

    def __init__(
        self,
        config: Path,
        port: int,
        admin_port: int,
        workdir: Path,
        *,
        args: tuple[str, ...] = (),
        host: str = LOOPBACK,
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        self.config = config
        self.port = port
        self.admin_port = admin_port
        self.workdir = workdir
        self.args = args
        self.host = host
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "spork_cli", "serve",
            "-c", str(self.config),
            "--port", str(self.port),
            "--admin-port", str(self.admin_port),
            *self.args,
        ]  # fmt: skip

    def launch(self) -> None:
        """Start the process without waiting for it."""
        if self._proc is not None:
            raise RuntimeError("already started")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=spork_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    async def start(self, timeout: float = 20.0, serving: int = 1) -> None:
        """Launch and wait until ready: admin `/health/ready` answers 200, ``serving``
        processes logged "spork is serving", and the request port accepts connections."""
        import aiohttp

        self.launch()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while not await self._ready(session, serving):
                if not self.running:
                    raise RuntimeError(
                        f"spork serve exited with {self.returncode} before it was ready\n"
                        f"{self.output()}"
                    )
                if time.monotonic() >= deadline:
                    self.kill()
                    raise TimeoutError(f"spork serve not ready within {timeout}s\n{self.output()}")
                await asyncio.sleep(0.05)

    async def _ready(self, session: Any, serving: int) -> bool:
        import aiohttp

        if len(self.events("spork is serving")) < serving:
            return False
        try:
            async with session.get(f"{self.admin_url}/health/ready") as response:
                if response.status != 200:
                    return False
            _reader, writer = await asyncio.open_connection(self.host, self.port)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def reloaded_since(self, since: float, timeout: float = 5.0) -> dict[str, Any]:
        """The first reload recorded after wall-clock time ``since`` (a file change or a
        SIGHUP), as `/health/ready` reports it (``result``: applied, unchanged, failed...)."""
        import aiohttp
        import orjson

        from tests.support.polling import eventually

        async with aiohttp.ClientSession() as session:

            async def probe() -> dict[str, Any] | None:
                async with session.get(f"{self.admin_url}/health/ready") as response:
                    body = orjson.loads(await response.read())
                last: dict[str, Any] | None = body["last_reload"]
                return last if last is not None and last["at"] >= since else None

            return await eventually(probe, timeout=timeout, what="a reload")

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server process itself (not its group)."""
        os.kill(self.pid, sig)

    async def wait(self, timeout: float = 30.0) -> int:
        """The exit code, once the process has exited by itself within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (code := self.returncode) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"spork serve still running after {timeout}s")
            await asyncio.sleep(0.02)
        return code

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and return the exit code once the process has exited by itself."""
        self.send(sig)
        return await self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (workers included) and reap the leader."""
        proc = self._proc
        if proc is None:
            return
        # The group outlives its leader while any worker is alive, so kill it either way.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def logs(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.logs()}\n--- stderr ---\n{self.stderr()}"

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """JSON log lines from stdout, optionally only those whose ``event`` is ``event``."""
        import orjson

        found: list[dict[str, Any]] = []
        for line in self.logs().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line still being written
            if isinstance(record, dict) and (event is None or record.get("event") == event):
                found.append(record)
        return found

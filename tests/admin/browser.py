"""Headless Chromium driven over the Chrome DevTools Protocol, with nothing but aiohttp.

Chromium picks its own debugging port (``--remote-debugging-port=0``) and writes it to
``DevToolsActivePort`` in the profile directory, so no port can be taken in between. The
browser runs in a process group of its own, which ``close()`` kills whole (renderers, GPU
and zygote processes included).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import LOOPBACK

START_TIMEOUT = 15.0
CALL_TIMEOUT = 10.0


class BrowserError(Exception):
    """Chromium did not start, or a DevTools call failed."""


class Chromium:
    def __init__(self, workdir: Path, width: int = 1280, height: int = 1000) -> None:
        self.workdir = workdir
        self.size = (width, height)
        self.profile = workdir / "profile"
        self.log = workdir / "chromium.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self.console: list[str] = []  # messages the page logged, and its uncaught errors
        self.requests: list[str] = []  # every URL the page asked for

    async def __aenter__(self) -> Chromium:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            pytest.fail(
                "chromium not found on PATH; the dashboard test drives it headless "
                "(sh scripts/system-deps.sh installs it)",
                pytrace=False,
            )
        self.profile.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--headless=new",
            "--no-sandbox",  # containers run tests as root, where the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            f"--window-size={self.size[0]},{self.size[1]}",
            f"--user-data-dir={self.profile}",
            f"--remote-debugging-address={LOOPBACK}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        port = await self._debugging_port()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT))
        async with self._session.get(f"http://{LOOPBACK}:{port}/json/list") as response:
            targets = await response.json()
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            raise BrowserError(f"no page target among {targets!r}")
        # Screenshots arrive as one large base64 message.
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        await self.call("Network.enable")

    async def _debugging_port(self) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrowserError(
                    f"chromium exited with {self._proc.returncode}:\n{self.output()}"
                )
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            if time.monotonic() >= deadline:
                raise BrowserError(f"no DevTools port within {START_TIMEOUT}s:\n{self.output()}")
            await asyncio.sleep(0.05)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result; events on the way are noted."""
        if self._ws is None:
            raise BrowserError("not connected")
        ident = next(self._ids)
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(CALL_TIMEOUT):
            while True:
                message = await self._ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise BrowserError(f"DevTools connection ended: {message.type!r}")
                data = message.json()
                if data.get("id") == ident:
                    if "error" in data:
                        raise BrowserError(f"{method}: {data['error']}")
                    result: dict[str, Any] = data.get("result", {})
                    return result
                self._note(data)

    def _note(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled":
            args = params.get("args", [])
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            self.console.append(f"console.{params.get('type')}: {text}")
        elif event.get("method") == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            self.console.append(f"exception: {exception.get('description', details.get('text'))}")

    async def navigate(self, url: str) -> None:
        result = await self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot load {url}: {result['errorText']}")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        result = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

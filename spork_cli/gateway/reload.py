"""Hot reload: watch -> load -> compile -> swap one reference; keep the old table on error.

The config's directory is watched (editors save by rename), filtered to the config file and
the files it references. SIGHUP reloads too. Equal configs are skipped; settings the model
marks as needing a restart (spork_cli/config/restart.py: listeners, the state store, metrics,
logging) are never half-applied: a change to them is reported as needing a restart and keeps
the running value, and the rest of the new config is applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path

import structlog
from aiohttp import web

from spork_cli.config.load import load_config
from spork_cli.config.mask import masker_for_file
from spork_cli.config.model import GatewayConfig
from spork_cli.config.restart import keep_static, plain, static_changes
from spork_cli.errors import ConfigError, SporkError
from spork_cli.gateway.compile import compile_table, retire
from spork_cli.gateway.keys import METRICS, RELOADER, TABLE, TableHolder

log = structlog.get_logger("spork.reload")

MAX_HISTORY = 50


def referenced_files(config: GatewayConfig, base: Path) -> list[Path]:
    names: list[str | None] = []
    if config.auth is not None:
        names += [config.auth.public_key_file, config.auth.jwks_file]
    names += [route.body_schema for route in config.routes]
    return [(base / n).resolve() for n in names if n]


def fingerprint(config: GatewayConfig, base: Path) -> str:
    """Changes when any setting (secrets by value) or any file the config references does."""
    digest = hashlib.sha256(repr(plain(config.model_dump())).encode())
    for path in referenced_files(config, base):
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0missing")
    return digest.hexdigest()


class Reloader:
    def __init__(self, app: web.Application, config_file: Path) -> None:
        self.app = app
        self.file = config_file.resolve()
        self.base = self.file.parent
        holder = app[TABLE]
        self.fingerprint = fingerprint(holder.current.config, self.base)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, work: Coroutine[object, object, object]) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def holder(self) -> TableHolder:
        return self.app[TABLE]

    def watched(self) -> set[Path]:
        return {self.file, *referenced_files(self.holder.current.config, self.base)}

    async def reload(self, trigger: str) -> dict[str, object]:
        async with self._lock:
            result = await self._reload(trigger)
        history = self.holder.reloads
        history.append(result)
        del history[:-MAX_HISTORY]
        metrics = self.app.get(METRICS)
        if metrics is not None:
            outcome = str(result.get("result"))
            pending = result.get("needs_restart")
            metrics.reload(
                {"applied": "success", "unchanged": "unchanged"}.get(outcome, "failure"),
                len(pending) if isinstance(pending, list) else None,
            )
        return result

    async def _reload(self, trigger: str) -> dict[str, object]:

        started = time.time()
        result: dict[str, object] = {"at": started, "trigger": trigger}
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(None, load_config, self.file)
            if self.holder.prepare is not None:
                new = self.holder.prepare(new)
        except ConfigError as exc:
            # What is logged and kept for /api/reloads never holds a secret of the file.
            masker = await loop.run_in_executor(None, masker_for_file, self.file)
            found = [masker.diagnostic(d) for d in exc.diagnostics]
            log.error(
                "reload failed: config invalid, still serving the previous one",
                errors=[d.one_line() for d in found] or [masker.scrub(exc.message)],
            )
            result.update(
                result="invalid",
                errors=[d.as_dict() for d in found] or [{"message": masker.scrub(exc.message)}],
            )
            return result
        except SporkError as exc:
            masker = await loop.run_in_executor(None, masker_for_file, self.file)
            message = masker.scrub(exc.message)
            log.error("reload failed, still serving the previous config", error=message)
            result.update(result="error", errors=[{"message": message}])
            return result
        current = self.holder.current
        restart = static_changes(current.config, new)
        if restart:
            log.warning("these settings need a restart to change", settings=restart)
            new = keep_static(current.config, new)
        mark = fingerprint(new, self.base)
        if mark == self.fingerprint:
            result.update(result="unchanged", needs_restart=restart)
            return result
        try:
            table = await compile_table(new, current, self.holder.resources)
        except (SporkError, OSError, ValueError) as exc:
            masker = await loop.run_in_executor(None, masker_for_file, self.file, new)
            message = masker.scrub(str(exc))
            log.error(
                "reload failed while compiling, still serving the previous config", error=message
            )
            result.update(result="error", errors=[{"message": message}])
            return result
        self.holder.current = table
        self.fingerprint = mark
        drain = new.server.timeouts.shutdown
        self.spawn(retire(current, table, drain))
        log.info(
            "config reloaded",
            routes=len(table.routes),
            services=len(table.pools),
            seconds=round(time.time() - started, 4),
        )
        result.update(result="applied", needs_restart=restart)
        return result

    async def watch(self) -> None:
        from watchfiles import awatch

        def wanted(_change: object, path: str) -> bool:
            return Path(path).resolve() in self.watched()

        directories = {self.base} | {p.parent for p in self.watched()}
        stop = asyncio.Event()
        async for _changes in awatch(
            *directories, watch_filter=wanted, debounce=400, step=30, stop_event=stop
        ):
            await self.reload("file change")


async def reloader_ctx(app: web.Application) -> AsyncIterator[None]:
    holder = app[TABLE]
    assert holder.config_file is not None
    reloader = Reloader(app, holder.config_file)
    app[RELOADER] = reloader
    watcher = asyncio.create_task(reloader.watch(), name="config-watch") if holder.watch else None
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        reloader.spawn(reloader.reload("SIGHUP"))

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        pass
    yield
    try:
        loop.remove_signal_handler(signal.SIGHUP)
    except (NotImplementedError, RuntimeError):
        pass
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

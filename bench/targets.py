"""The servers under load, each one process on loopback in front of the same upstream: the
upstream itself, spork (a plain route and the full chain), the aiohttp floor, FastAPI + httpx,
nginx and caddy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import HOST, ROOT, Processes, find_tool, free_port, wait_ready
from load import Target

BODY = '{"id":1,"name":"Ada Lovelace","email":"ada@example.com"}'
SECRET = "b" * 48
CADDY_ENV = {"GOMAXPROCS": "1"}  # one OS thread running Go code, like one nginx worker


def nginx_conf(work: Path, name: str, port: int, upstream: int | None) -> Path:
    """nginx with one worker: a static JSON answer, or a keep-alive reverse proxy."""
    if upstream is None:
        location = f"default_type application/json; return 200 '{BODY}';"
        upstream_block = ""
    else:
        upstream_block = f"upstream up {{ server {HOST}:{upstream}; keepalive 64; }}"
        location = (
            "proxy_pass http://up; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_set_header Host $host;'
        )
    conf = work / f"{name}.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  keepalive_requests 1000000;
  {upstream_block}
  server {{ listen {HOST}:{port}; location / {{ {location} }} }}
}}
"""
    )
    return conf


def caddy_conf(work: Path, port: int, upstream: int) -> Path:
    """caddy's native JSON config: admin endpoint off, no automatic HTTPS, no access log, and
    as many idle upstream connections as nginx keeps."""
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"{HOST}:{upstream}"}],
        "transport": {"protocol": "http", "keep_alive": {"max_idle_conns_per_host": 64}},
    }
    server = {
        "listen": [f"{HOST}:{port}"],
        "routes": [{"handle": [proxy]}],
        "automatic_https": {"disable": True},
    }
    config = {
        "admin": {"disabled": True},
        "storage": {"module": "file_system", "root": str(work / "caddy-data")},
        "apps": {"http": {"servers": {"bench": server}}},
    }
    path = work / "caddy.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def spork_conf(
    path: Path,
    port: int,
    admin: int,
    upstream: int,
    redis: int | None = None,
    cached: bool = False,
    limited: bool = False,
) -> Path:
    """One route to the upstream; with ``redis``, the full chain: HS256 auth and a GCRA limit
    in that redis-server (never reached). Metrics and the access log are on by default."""
    text = f"""
[server]
port = {port}
[admin]
port = {admin}
[[services]]
name = "users"
endpoints = ["http://{HOST}:{upstream}"]
[[routes]]
path = "/api/users"
service = "users"
"""
    if cached:
        # The upstream states no freshness: the operator gives its answers an hour.
        text += 'cache = { ttl = "1h", default_ttl = "1h" }\n'
    if limited:
        # A GCRA limit in memory state (never reached): with --workers, in the supervisor's
        # store, one round trip over its Unix socket per request.
        text += 'rate_limit = { requests = 1000000000, per = "1m", key = ["ip"] }\n'
    if redis is not None:
        text += f"""auth = "required"
rate_limit = {{ requests = 1000000000, per = "1m", key = ["user"] }}
[state]
backend = "redis"
url = "redis://{HOST}:{redis}/0"
[auth]
algorithms = ["HS256"]
secret = "{SECRET}"
"""
    path.write_text(text)
    return path


class Launcher:
    """Starts each target in ``procs`` against the upstream on ``upstream``."""

    def __init__(self, procs: Processes, spork: list[str], upstream: int) -> None:
        self.procs = procs
        self.work = procs.work
        self.spork = spork
        self.upstream = upstream

    def _python(self, key: str, name: str, script: str) -> Target:
        port = free_port()
        command = [sys.executable, str(ROOT / "bench" / script), str(port)]
        proc = self.procs.start(key, [*command, f"http://{HOST}:{self.upstream}"], port)
        return Target(key, name, port, proc)

    def spork_plain(self) -> Target:
        port = free_port()
        config = spork_conf(self.work / "plain.toml", port, free_port(), self.upstream)
        command = [*self.spork, "serve", "-c", str(config), "--no-reload"]
        return Target("plain", "spork, plain route", port, self.procs.start("plain", command, port))

    def spork_cached(self) -> Target:
        """The plain route with a response cache: every measured request is a hit."""
        port = free_port()
        path = self.work / "cached.toml"
        config = spork_conf(path, port, free_port(), self.upstream, cached=True)
        command = [*self.spork, "serve", "-c", str(config), "--no-reload"]
        proc = self.procs.start("cached", command, port)
        return Target("cached", "spork, cached route (hits)", port, proc, headers=[])

    def spork_workers(self, workers: int = 2) -> Target:
        """The plain route served by ``workers`` processes (`--workers`), once all listen."""
        port, admin = free_port(), free_port()
        config = spork_conf(self.work / "workers.toml", port, admin, self.upstream)
        command = [
            *self.spork,
            "serve",
            "-c",
            str(config),
            "--no-reload",
            "--workers",
            str(workers),
        ]
        proc = self.procs.start("workers", command, port)
        wait_ready(admin)
        return Target("workers", f"spork, plain route, --workers {workers}", port, proc)

    def spork_limited(self, workers: int = 1) -> Target:
        """A route with a limit in memory state, served by ``workers`` processes: with more
        than one they share the supervisor's store."""
        port, admin = free_port(), free_port()
        key = "limited" if workers == 1 else f"limited{workers}"
        config = spork_conf(self.work / f"{key}.toml", port, admin, self.upstream, limited=True)
        command = [*self.spork, "serve", "-c", str(config), "--no-reload"]
        if workers > 1:
            command += ["--workers", str(workers)]
        proc = self.procs.start(key, command, port)
        wait_ready(admin)
        shown = "one process" if workers == 1 else f"--workers {workers}, one shared store"
        return Target(key, f"spork, limited route (memory), {shown}", port, proc)

    def spork_chain(self) -> tuple[Target, str]:
        """The full chain and a token it accepts (sent to every target alike)."""
        redis = free_port()
        command = ["redis-server", "--port", str(redis), "--bind", HOST, "--save", ""]
        self.procs.start("redis", [*command, "--appendonly", "no"], redis)
        port = free_port()
        config = spork_conf(self.work / "chain.toml", port, free_port(), self.upstream, redis)
        command = [*self.spork, "serve", "-c", str(config), "--no-reload"]
        proc = self.procs.start("chain", command, port)
        from spork_cli.auth.mint import mint
        from spork_cli.config.load import load_config

        token = mint(load_config(config).auth, self.work, sub="bench", ttl=3600)
        return Target("chain", "spork, full chain", port, proc), token

    def floor(self) -> Target:
        return self._python("floor", "aiohttp floor proxy", "floor_proxy.py")

    def fastapi(self) -> Target:
        return self._python("fastapi", "FastAPI + httpx proxy", "fastapi_proxy.py")

    def nginx(self) -> Target:
        port = free_port()
        conf = nginx_conf(self.work, "proxy", port, self.upstream)
        proc = self.procs.start("nginx", [str(find_tool("nginx")), "-c", str(conf)], port)
        return Target("nginx", "nginx proxy", port, proc)

    def caddy(self) -> Target:
        port = free_port()
        conf = caddy_conf(self.work, port, self.upstream)
        home = self.work / "caddy-home"
        env = {
            **CADDY_ENV,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
        }
        command = [str(find_tool("caddy")), "run", "--config", str(conf)]
        proc = self.procs.start("caddy", command, port, env)
        return Target("caddy", "caddy proxy (GOMAXPROCS=1)", port, proc)


def start_upstream(procs: Processes) -> Target:
    """nginx answering a small static JSON body from one worker."""
    port = free_port()
    conf = nginx_conf(procs.work, "upstream", port, None)
    proc = procs.start("upstream", [str(find_tool("nginx")), "-c", str(conf)], port)
    return Target("direct", "upstream direct", port, proc)

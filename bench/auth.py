"""Auth benchmark: the same route without auth, with HS256 and with ES256, each with one
repeated token (served from the verifier's cache) and with a fresh token per request (every
request pays a signature check). Loopback only, bounded, interleaved rounds.

    python bench/auth.py [--duration 4] [--rounds 3] [--connections 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import free_port, wait_port
from targets import nginx_conf

from spork_cli.auth.keygen import keygen
from spork_cli.auth.mint import build_claims, sign, signing_key
from spork_cli.config.load import load_config

FRESH_TOKENS = 30_000  # more than the verifier cache holds, so every request misses


@dataclass
class Case:
    name: str
    port: int
    tokens: list[str] | None
    rps: list[float] = field(default_factory=list)


def lua_script(work: Path, name: str, tokens: list[str]) -> Path:
    listing = work / f"{name}.tokens"
    listing.write_text("\n".join(tokens) + "\n")
    script = work / f"{name}.lua"
    script.write_text(
        f"""
local tokens = {{}}
for line in io.lines("{listing}") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format("GET", "/api/users/1", {{["Authorization"] = "Bearer " .. tokens[i]}})
end
"""
    )
    return script


def wrk(port: int, duration: float, connections: int, script: Path | None) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/api/users/1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"failed responses on port {port}:\n{out}")
    return float(out.split("Requests/sec:")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="spork-bench-auth-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up = free_port()
        procs.append(subprocess.Popen([nginx, "-c", str(nginx_conf(work, "up", up, None))]))
        wait_port(up)
        es = keygen("ES256", work / "keys")
        cases: list[Case] = []
        for alg in ("none", "HS256", "ES256"):
            port, admin = free_port(), free_port()
            if alg == "none":
                auth, route_auth = "", "none"
            elif alg == "HS256":
                auth = f'[auth]\nalgorithms = ["HS256"]\nsecret = "{"s" * 48}"\n'
                route_auth = "required"
            else:
                auth = (
                    '[auth]\nalgorithms = ["ES256"]\n'
                    f'public_key_file = "{es.public_key}"\nprivate_key_file = "{es.private_key}"\n'
                )
                route_auth = "required"
            config = work / f"{alg}.toml"
            config.write_text(
                f"[server]\nport = {port}\n[admin]\nport = {admin}\n{auth}"
                f'[[services]]\nname = "u"\nendpoints = ["http://127.0.0.1:{up}"]\n'
                f'[[routes]]\npath = "/api/users"\nservice = "u"\nauth = "{route_auth}"\n'
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "spork_cli", "serve", "-c", str(config), "--no-reload"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_port(port)
            if alg == "none":
                cases.append(Case("no auth", port, None))
                continue
            loaded = load_config(config)
            key = signing_key(loaded.auth, config.parent)
            one = sign(build_claims(loaded.auth, sub="bench", ttl=3600), key)
            fresh = [
                sign(build_claims(loaded.auth, sub=f"u{i}", ttl=3600), key)
                for i in range(FRESH_TOKENS)
            ]
            cases.append(Case(f"{alg}, one repeated token", port, [one]))
            cases.append(Case(f"{alg}, a fresh token per request", port, fresh))
        scripts = {
            c.name: lua_script(work, f"case{i}", c.tokens) if c.tokens else None
            for i, c in enumerate(cases)
        }
        for case in cases:
            wrk(case.port, 1, args.connections, scripts[case.name])
        for _ in range(args.rounds):
            for case in cases:
                case.rps.append(wrk(case.port, args.duration, args.connections, scripts[case.name]))
        base = statistics.median(cases[0].rps)
        lines = [
            f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} interleaved "
            "rounds, spork in front of nginx on loopback.",
            "",
            "| route | req/s median (min-max) | x no auth |",
            "| --- | --- | --- |",
        ]
        for case in cases:
            median = statistics.median(case.rps)
            lines.append(
                f"| {case.name} | {median:,.0f} ({min(case.rps):,.0f}-{max(case.rps):,.0f}) "
                f"| {median / base:.2f} |"
            )
        report = "\n".join(lines) + "\n"
        print(report)
        if args.out:
            args.out.write_text(report)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""spork's response cache measured by the HTTP caching conformance suite, beside nginx.

    python bench/cache_conformance.py [--skip redis,defaults,nginx] [--suite DIR] [--out FILE]

Installs npm's http-cache-tests (bench/cache_suite.py) into DIR (default
~/.cache/spork/cache-tests), starts its origin on loopback, and runs its client against each
target in turn, every one a cache in front of that origin:

- spork, memory state: one route `/` with `cache = { ttl = "1d" }` (the suite's freshness
  lifetimes run up to hours; the default ttl, 30 s, would cap them);
- spork, Redis state: the same route with its state in a real redis-server;
- spork with `cache = {}`: every setting at its default, the 30 s ttl included;
- nginx with the suite's own nginx settings (`proxy_cache`, `proxy_cache_revalidate on`).

About 25 s per target. Writes docs/CACHE_CONFORMANCE.md (or --out). Needs node and npm, and
for the other targets redis-server and nginx (Debian: nodejs npm redis-server nginx-light).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cache_suite
from cache_suite import Outcome, SuiteError
from harness import HOST, ROOT, Processes, find_tool, free_port, spork_command, use_this_checkout
from needs import versions

CACHE = 'cache = { ttl = "1d" }'
DEFAULTS = "cache = {}"

# Required tests this release of the suite fails spork for, because it predates RFC 9111
# on Age: spork follows the RFC (and so do later revisions of the suite).
AGE_IGNORED = (
    "the `Age` value is not delta-seconds, and RFC 9111 5.1 says a cache should ignore such a "
    "field: the response is then fresh by its `max-age`"
)
AGE_FIRST = (
    "`Age` is a list, and RFC 9111 5.1 says a cache should use its first member and discard "
    "the rest: that member leaves the response fresh"
)
DIVERGENCES: dict[str, str] = {
    "age-parse-nonnumeric": AGE_IGNORED,
    "age-parse-negative": AGE_IGNORED,
    "age-parse-float": AGE_IGNORED,
    "age-parse-parameter": AGE_IGNORED,
    "age-parse-numeric-parameter": AGE_IGNORED,
    "age-parse-prefix-twoline": AGE_FIRST,
    "age-parse-dup-0": AGE_FIRST,
    "age-parse-dup-0-twoline": AGE_FIRST,
    "age-parse-dup-old": AGE_FIRST,
    # Not a reuse: a miss. The suite's origin targets its directive at the surrogate that the
    # request's Surrogate-Capability names, and spork sends none, so Cache-Control governs.
    "surrogate-fresh-cc-nostore": (
        "its `Surrogate-Control` directive is targeted at the surrogate named by the request's "
        "`Surrogate-Capability`, which spork does not send: `Cache-Control: no-store` governs, "
        "and the response is not stored (a miss, not a reuse)"
    ),
}


@dataclass
class Measured:
    key: str
    name: str
    outcomes: dict[str, Outcome]


def spork_config(port: int, admin: int, origin: int, cache: str, redis: str | None) -> str:
    """One route for the whole suite. No retries: nginx with one upstream makes none, and the
    suite reads a retried request as a failure to set the test up. No access log."""
    text = f"""[server]
port = {port}
[admin]
port = {admin}
[logging]
access_log = false
[[services]]
name = "origin"
endpoints = ["http://{HOST}:{origin}"]
retries = {{ attempts = 0 }}
[[routes]]
path = "/"
service = "origin"
{cache}
"""
    if redis is not None:
        # A generous store timeout: under a loaded machine a 50 ms one would turn lookups
        # into misses (on_error "open"), and the suite would read them as its failures.
        text += f'[state]\nbackend = "redis"\nurl = "{redis}"\ntimeout = "2s"\n'
    return text


def nginx_config(work: Path, port: int, origin: int) -> Path:
    conf = work / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx.error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=my-cache:8m inactive=600m;
  server {{
    listen {HOST}:{port};
    location / {{
      proxy_pass http://{HOST}:{origin};
      proxy_cache my-cache;
      proxy_cache_revalidate on;
    }}
  }}
}}
"""
    )
    return conf


def measure_spork(
    procs: Processes,
    package: Path,
    tests: Mapping[str, cache_suite.Test],
    origin: int,
    key: str,
    cache: str,
    redis: str | None = None,
) -> dict[str, Outcome]:
    port = free_port()
    config = procs.work / f"{key}.toml"
    config.write_text(spork_config(port, free_port(), origin, cache, redis))
    proc = procs.start(key, [*spork_command(), "serve", "-c", str(config), "--no-reload"], port)
    try:
        return cache_suite.outcomes(tests, cache_suite.run(package, f"http://{HOST}:{port}"))
    finally:
        procs.stop(proc)


def report(measured: list[Measured], package_version: str, found: str) -> str:
    kinds = (
        ("required", ("pass", "fail")),
        ("optimal", ("pass", "fail")),
        ("check", ("yes", "no")),
    )
    lines = [
        "# The response cache and the HTTP caching conformance suite",
        "",
        "Measured with `python bench/cache_conformance.py`: npm's "
        f"`http-cache-tests@{package_version}` (the suite behind cache-tests.fyi), its origin "
        f"and client on loopback, against each target below in turn ({found}). "
        "A test that depends on one that failed counts as neither pass nor fail, as in the "
        "suite's own report; *setup* means the test could not be run as meant (for example "
        "the origin expected a conditional request it did not get).",
        "",
        "| target | required pass | required fail | optimal pass | optimal fail | check yes "
        "| check no | setup or retry | not run (dependency) | reused where a test forbids |",
        "| --- " * 10 + "|",
    ]
    for m in measured:
        tally = cache_suite.tally(m.outcomes)
        cells = [str(tally[(kind, verdict)]) for kind, verdicts in kinds for verdict in verdicts]
        setup = sum(n for (_, verdict), n in tally.items() if verdict in ("setup", "retry"))
        skipped = sum(n for (_, verdict), n in tally.items() if verdict == "dependency")
        reused = sum(o.reused for o in m.outcomes.values())
        lines.append(
            f"| {m.name} | " + " | ".join([*cells, str(setup), str(skipped)]) + f" | {reused} |"
        )
    lines += [
        "",
        "## Where the suite and RFC 9111 disagree",
        "",
        'Of the required tests spork fails with `ttl = "1d"`, all but one are where this '
        "release of the suite predates RFC 9111's rule for `Age`: spork follows the RFC, and "
        "later revisions of the suite expect what spork does. Those are the whole of spork's "
        "*reused where a test forbids* column: the RFC allows each of those reuses. "
        "`tests/cache/test_conformance.py` runs the suite in CI on both backends and fails on "
        "any other required failure.",
        "",
    ]
    spork = measured[0].outcomes
    for tid in sorted(cache_suite.failed(spork)):
        lines.append(f"- `{tid}`: {DIVERGENCES.get(tid, 'not explained: a defect')}.")
    for m in measured:
        lines += ["", f"## Required tests {m.name} fails", ""]
        fails = cache_suite.failed(m.outcomes)
        if not fails:
            lines.append("None.")
        for tid, o in sorted(fails.items()):
            lines.append(f"- `{tid}`: {o.message}")
    if len(measured) > 1 and measured[-1].key == "nginx":
        nginx_outcomes = measured[-1].outcomes
        ours = {t for t, o in spork.items() if o.kind == "required" and o.verdict == "pass"}
        theirs = {
            t for t, o in nginx_outcomes.items() if o.kind == "required" and o.verdict == "pass"
        }
        lines += [
            "",
            "## spork beside nginx",
            "",
            f"Required tests spork (memory) passes and nginx does not: {len(ours - theirs)}. "
            f"Required tests nginx passes and spork does not: {len(theirs - ours)}"
            + (": " + ", ".join(f"`{t}`" for t in sorted(theirs - ours)) if theirs - ours else "")
            + ".",
        ]
    lines += [
        "",
        "## Operator settings the figures depend on",
        "",
        "- `ttl` caps every freshness lifetime; the suite's run up to hours, so the route here "
        'has `ttl = "1d"`. With the default (30 s), responses that state more are fresh for '
        "30 s, and the suite counts the difference as failures.",
        "- `targeted` names the targeted fields (RFC 9213): `CDN-Cache-Control`, then "
        "`Surrogate-Control`, by default. spork does not send `Surrogate-Capability`, so "
        "directives targeted at a named surrogate are not spork's.",
        '- With Redis state the store timeout is `"2s"`: the suite measures what the cache '
        "does, and a loaded machine should not turn lookups into misses.",
        "- The service makes no retries (`retries = { attempts = 0 }`), as nginx with one "
        "upstream: by default spork retries a 502, 503 or 504 twice, which the suite reads as "
        "a failure to set its test up.",
        "- `statuses` keeps its default, RFC 9110's heuristically cacheable statuses: the "
        "suite's optional tests that a fresh 302, 307, 400 or 500 is reused fail, and the "
        "required ones that depend on them (that the same response is not reused stale) do "
        "not run.",
        '- Responses with `Set-Cookie` are never stored, `no-cache="field"` is read as '
        "`no-cache`, and a response that varies on a request header outside `vary` is not "
        "stored: all stricter than the suite asks, and shown as *setup*.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", default="", help="leave out: redis,defaults,nginx")
    parser.add_argument("--suite", type=Path, default=Path.home() / ".cache/spork/cache-tests")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "CACHE_CONFORMANCE.md")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    nginx = None if "nginx" in skip else find_tool("nginx")
    if "nginx" not in skip and nginx is None:
        raise SystemExit("nginx not found (apt-get install nginx-light), or --skip nginx")
    use_this_checkout()
    try:
        package = cache_suite.install(args.suite)
        tests = cache_suite.metadata(package)
    except SuiteError as exc:
        raise SystemExit(str(exc)) from None
    measured: list[Measured] = []
    with (
        tempfile.TemporaryDirectory(prefix="spork-cache-tests-") as tmp,
        Processes(Path(tmp)) as procs,
        cache_suite.origin(package, Path(tmp) / "origin") as origin,
    ):
        work = procs.work

        def spork(key: str, name: str, cache: str, redis: str | None = None) -> None:
            print(f"{name} ...", file=sys.stderr)
            found = measure_spork(procs, package, tests, origin, key, cache, redis)
            measured.append(Measured(key, name, found))

        spork("memory", "spork, memory state", CACHE)
        if "redis" not in skip:
            redis = free_port()
            command = ["redis-server", "--port", str(redis), "--bind", HOST, "--save", ""]
            procs.start("redis", [*command, "--appendonly", "no"], redis)
            spork("redis", "spork, Redis state", CACHE, f"redis://{HOST}:{redis}/0")
        if "defaults" not in skip:
            spork("defaults", "spork, default settings (ttl 30 s)", DEFAULTS)
        if nginx is not None:
            print("nginx ...", file=sys.stderr)
            port = free_port()
            work.chmod(0o755)  # started as root, nginx's workers run as nobody
            proc = procs.start("nginx", [nginx, "-c", str(nginx_config(work, port, origin))], port)
            results = cache_suite.run(package, f"http://{HOST}:{port}")
            measured.append(
                Measured("nginx", "nginx proxy_cache", cache_suite.outcomes(tests, results))
            )
            procs.stop(proc)
    found = versions({"upstream"} if nginx else set())
    text = report(measured, cache_suite.VERSION, found)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

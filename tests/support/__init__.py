"""Real parts for tests, one module per concern:

- ``net``: free loopback ports, waiting for a listener, the kernel's TCP table
- ``processes``: required binaries, reaping, /proc readings
- ``redis_server``, ``cluster``, ``sentinel``: Redis as processes of the run
- ``upstream``: the one configurable upstream (records, echoes, streams, fails on demand)
- ``cli``: the CLI as a process; ``server``: `spork serve` as a process
- ``config``: the gateway.toml builder; ``polling``: ``eventually``; ``tls``: certificates
- ``problems``: ``assert_problem``, the one check of a gateway error

Everything is re-exported here, so ``from tests.support import X`` works for every part.
"""

from tests.support.cli import PROJECT_ROOT, SporkRunner, run_spork, spork_env
from tests.support.cluster import CLUSTER_SLOTS, RedisClusterNodes, start_redis_cluster
from tests.support.config import gateway_toml, replace_file
from tests.support.net import (
    CLUSTER_BUS_OFFSET,
    LOOPBACK,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    Relay,
    free_cluster_ports,
    free_port,
    free_ports,
    hold_fixed_ports,
    refuses,
    tcp_sockets,
    wait_for_port,
)
from tests.support.polling import eventually
from tests.support.problems import PROBLEM_KEYS, PROBLEM_TYPE, assert_problem
from tests.support.processes import (
    Processes,
    child_pids,
    proc_status_kib,
    reap,
    require_binary,
    run_program,
    socket_inodes,
)
from tests.support.redis_server import RedisServer, redis_ping, start_redis_server
from tests.support.server import SporkServer
from tests.support.tls import Pki, certificate_authority, self_signed_certificate, server_context
from tests.support.upstream import (
    PATTERN,
    RECORDED,
    RecordedRequest,
    ThreadedUpstream,
    Upstream,
    UpstreamFactory,
    pattern_blocks,
    pattern_bytes,
    pattern_digest,
    serve_app,
    upstream_in_thread,
)

__all__ = [
    "CLUSTER_BUS_OFFSET",
    "CLUSTER_SLOTS",
    "LOOPBACK",
    "PATTERN",
    "PROBLEM_KEYS",
    "PROBLEM_TYPE",
    "PROJECT_ROOT",
    "RECORDED",
    "TCP_ESTABLISHED",
    "TCP_LISTEN",
    "Pki",
    "Processes",
    "RecordedRequest",
    "RedisClusterNodes",
    "RedisServer",
    "Relay",
    "SporkRunner",
    "SporkServer",
    "ThreadedUpstream",
    "Upstream",
    "UpstreamFactory",
    "assert_problem",
    "certificate_authority",
    "child_pids",
    "eventually",
    "free_cluster_ports",
    "free_port",
    "free_ports",
    "gateway_toml",
    "hold_fixed_ports",
    "pattern_blocks",
    "pattern_bytes",
    "pattern_digest",
    "proc_status_kib",
    "reap",
    "redis_ping",
    "refuses",
    "replace_file",
    "require_binary",
    "run_program",
    "run_spork",
    "self_signed_certificate",
    "serve_app",
    "server_context",
    "socket_inodes",
    "spork_env",
    "start_redis_cluster",
    "start_redis_server",
    "tcp_sockets",
    "upstream_in_thread",
    "wait_for_port",
]

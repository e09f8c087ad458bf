"""A Redis Cluster of redis-server processes, primaries only, every slot assigned."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import redis

from tests.support.net import free_cluster_ports
from tests.support.redis_server import RedisServer

CLUSTER_SLOTS = 16384


class RedisClusterNodes:
    """A Redis Cluster of primaries only, each node a RedisServer in its own directory."""

    def __init__(self, servers: list[RedisServer], cli: str) -> None:
        self.servers = servers
        self.cli = cli

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(server.host, server.port) for server in self.servers]

    @property
    def url(self) -> str:
        host, port = self.nodes[0]
        return f"redis+cluster://{host}:{port}"

    def create(self, timeout: float = 30.0) -> None:
        """Assign slots with redis-cli and wait until every node reports a healthy cluster."""
        addresses = [f"{host}:{port}" for host, port in self.nodes]
        result = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
            )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = [self.cluster_info(server) for server in self.servers]
            if all(self._healthy(info) for info in states):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cluster not healthy after {timeout}s: {states}")
            time.sleep(0.05)

    def _healthy(self, info: Mapping[str, str]) -> bool:
        # Gossip must have reached every node, not just slot coverage, or clients may be sent
        # to a node that does not know its peers yet.
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
            and info.get("cluster_known_nodes") == str(len(self.servers))
            and info.get("cluster_size") == str(len(self.servers))
        )

    @staticmethod
    def cluster_info(server: RedisServer) -> dict[str, str]:
        try:
            with server.client(decode_responses=True, socket_timeout=2) as client:
                raw = client.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return {}
        if isinstance(raw, dict):
            return {str(key): str(value) for key, value in raw.items()}
        pairs = (line.partition(":") for line in str(raw).splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, _, value in pairs}

    def primaries(self) -> list[RedisServer]:
        found: list[RedisServer] = []
        for server in self.servers:
            with server.client(decode_responses=True, socket_timeout=2) as client:
                if client.execute_command("ROLE")[0] == "master":
                    found.append(server)
        return found

    def flushall(self) -> None:
        for server in self.primaries():
            with server.client(socket_timeout=5) as client:
                client.flushall()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_redis_cluster(
    binary: str, cli: str, workdir: Path, size: int = 3, attempts: int = 3
) -> RedisClusterNodes:
    """Start `size` cluster-enabled redis-servers on free port pairs and join them."""
    error: Exception | None = None
    for attempt in range(attempts):
        servers: list[RedisServer] = []
        try:
            for port in free_cluster_ports(size):
                node_dir = workdir / f"try{attempt}-node-{port}"
                server = RedisServer(
                    binary,
                    node_dir,
                    port,
                    extra_args=(
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"nodes-{port}.conf",
                        "--cluster-node-timeout", "5000",
                    ),
                )  # fmt: skip
                servers.append(server)
                server.start()
            cluster = RedisClusterNodes(servers, cli)
            cluster.create()
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
            error = exc
            for server in servers:
                server.stop(kill=True)
            continue
        return cluster
    raise RuntimeError(f"could not start a Redis Cluster after {attempts} attempts") from error

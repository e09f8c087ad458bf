"""RespClient against real redis-servers (plain, password, ACL user, unix socket, TLS, one that
stops and starts), a misbehaving fake server on loopback, and parser parity: hiredis.Reader vs
the pure-Python reader on generated RESP split into random chunks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spork_cli.state.resp import (
    HAVE_HIREDIS,
    NEED_MORE,
    ConnectionError,
    ProtocolError,
    PythonReader,
    Reader,
    ReplyError,
    RespClient,
    RespError,
    Script,
    encode,
    new_reader,
)
from tests.support import (
    LOOPBACK,
    RedisServer,
    eventually,
    free_port,
    self_signed_certificate,
)

needs_hiredis = pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis (extra `fast`) not installed")
PARSERS = [pytest.param("hiredis", marks=needs_hiredis), "python"]
# Every call that should fail fast must fail well within this, far below connect timeouts.
FAST = 1.0


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(redis_url: str, parser: str) -> AsyncIterator[RespClient]:
    resp = RespClient.from_url(redis_url, connect_timeout=5, use_hiredis=parser == "hiredis")
    try:
        yield resp
    finally:
        await resp.aclose()


# -- replies -----------------------------------------------------------------------------------


async def test_reply_types(client: RespClient) -> None:
    assert await client.execute("PING") == b"PONG"  # simple strings are bytes, as with hiredis
    assert await client.execute("SET", "k", "v") == b"OK"
    assert await client.execute("GET", "k") == b"v"
    assert await client.execute("GET", "missing") is None
    assert await client.execute("INCRBY", "n", 41) == 41
    assert await client.execute("INCRBYFLOAT", "f", 1.5) == b"1.5"
    assert await client.execute("RPUSH", "list", b"a", "b", 3) == 3
    assert await client.execute("LRANGE", "list", 0, -1) == [b"a", b"b", b"3"]
    assert await client.execute("LRANGE", "missing", 0, -1) == []
    assert await client.execute("SET", "k", "v", "NX") is None


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\r\n",
        b"$5\r\n*1\r\n:1\r\n-ERR no\r\n",
        bytes(range(256)),
        "h\u00e9llo \u2603".encode(),
        os.urandom(1 << 20),
        b"\r\n" * (1 << 19),
    ],
    ids=["empty", "crlf", "resp-lookalike", "all-bytes", "utf8", "1MiB-random", "1MiB-crlf"],
)
async def test_values_are_binary_safe(client: RespClient, value: bytes) -> None:
    await client.execute("SET", "k", value)
    assert await client.execute("GET", "k") == value
    assert await client.execute("ECHO", value) == value


async def test_str_int_and_float_arguments_are_encoded_like_redis_expects(
    client: RespClient,
) -> None:
    await client.execute("SET", "k", "h\u00e9")
    assert await client.execute("GET", "k") == "h\u00e9".encode()
    assert await client.execute("INCRBY", "n", -(2**62)) == -(2**62)
    assert await client.execute("INCRBYFLOAT", "f", 0.1) == b"0.1"
    with pytest.raises(TypeError):
        await client.execute("SET", "k", True)


async def test_nested_arrays_and_nested_errors_from_eval(client: RespClient) -> None:
    source = "return {1, {2, 'x', {}, {{'deep'}}}, 'y', false, redis.error_reply('inner')}"
    reply = await client.execute("EVAL", source, 0)
    assert reply[:4] == [1, [2, b"x", [], [[b"deep"]]], b"y", None]
    # An error inside an array is a value, not raised: the call as a whole succeeded.
    assert isinstance(reply[4], ReplyError)
    assert str(reply[4]) == "ERR inner"


async def test_error_replies_raise(client: RespClient) -> None:
    with pytest.raises(ReplyError, match="unknown command"):
        await client.execute("NO-SUCH-COMMAND")
    await client.execute("SET", "s", "text")
    with pytest.raises(ReplyError, match=r"^ERR value is not an integer"):
        await client.execute("INCR", "s")
    with pytest.raises(RespError):
        await client.execute("LPUSH", "s", "x")
    assert await client.execute("PING") == b"PONG"


async def test_errors_in_a_pipelined_burst_do_not_disturb_neighbours(client: RespClient) -> None:
    await client.execute("SET", "s", "text")
    calls = [
        client.execute("INCR", "s") if i % 3 == 0 else client.execute("ECHO", f"m{i}")
        for i in range(600)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, ReplyError), (i, result)
        else:
            assert result == f"m{i}".encode(), (i, result)


# -- scripts -----------------------------------------------------------------------------------


async def test_evalsha_sends_the_source_only_after_noscript(
    client: RespClient, redis_server: RedisServer
) -> None:
    script = Script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    with redis_server.client() as admin:
        admin.script_flush()  # FLUSHALL between tests keeps scripts
        assert admin.script_exists(script.sha) == [False]
        assert await client.evalsha(script, ["n"], ["a"]) == [b"n", b"a", 1]
        assert admin.script_exists(script.sha) == [True]  # the EVAL fallback cached it

        admin.script_flush()
        admin.config_resetstat()
        assert await client.evalsha(script, ["n"], [b"b"]) == [b"n", b"b", 2]
        assert await client.evalsha(script, ["n"], [3]) == [b"n", b"3", 3]
        stats = admin.info("commandstats")
    assert stats["cmdstat_eval"]["calls"] == 1
    assert stats["cmdstat_evalsha"]["calls"] == 2


async def test_evalsha_after_flush_under_concurrency(
    client: RespClient, redis_server: RedisServer
) -> None:
    script = Script("return redis.call('INCR', KEYS[1])")
    await client.evalsha(script, ["n"], [])
    with redis_server.client() as admin:
        admin.script_flush()
    results = await asyncio.gather(*(client.evalsha(script, ["n"], []) for _ in range(200)))
    assert sorted(results) == list(range(2, 202))


async def test_script_errors_other_than_noscript_are_not_retried(
    client: RespClient, redis_server: RedisServer
) -> None:
    script = Script("redis.call('INCR', KEYS[1]); return redis.error_reply('NOPE ' .. ARGV[1])")
    with pytest.raises(ReplyError, match="NOPE first"):
        await client.evalsha(script, ["n"], ["first"])  # via EVAL, after NOSCRIPT
    with pytest.raises(ReplyError, match="NOPE again"):
        await client.evalsha(script, ["n"], ["again"])
    with redis_server.client() as admin:
        assert admin.get("n") == b"2"


def test_script_digest_is_the_sha1_redis_uses(redis_server: RedisServer) -> None:
    source = "return 'caf\u00e9'"
    with redis_server.client() as admin:
        assert Script(source).sha == admin.script_load(source)


# -- pipelining and cancellation ---------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 4])
async def test_2000_concurrent_calls_each_get_their_own_reply(
    redis_url: str, parser: str, connections: int
) -> None:
    payloads = [f"{i}:" + "x" * (i % 301) for i in range(2000)]
    async with RespClient.from_url(
        redis_url, connect_timeout=5, connections=connections, use_hiredis=parser == "hiredis"
    ) as client:
        echoes, counts = await asyncio.gather(
            asyncio.gather(*(client.execute("ECHO", p) for p in payloads)),
            asyncio.gather(*(client.execute("INCR", "n") for _ in payloads)),
        )
    assert echoes == [p.encode() for p in payloads]
    if connections == 1:
        assert counts == list(range(1, 2001))  # one connection: the order calls were made in
    else:
        assert sorted(counts) == list(range(1, 2001))


async def test_concurrent_first_calls_share_one_connect(
    redis_url: str, redis_server: RedisServer
) -> None:
    with redis_server.client() as admin:
        before = admin.info("stats")["total_connections_received"]
        async with RespClient.from_url(redis_url, connect_timeout=5, connections=3) as client:
            replies = await asyncio.gather(*(client.execute("PING") for _ in range(300)))
        after = admin.info("stats")["total_connections_received"]
    assert replies == [b"PONG"] * 300
    assert after - before == 3


async def test_cancelled_calls_do_not_desync_the_connection(
    client: RespClient, redis_server: RedisServer
) -> None:
    async def echo(i: int) -> bytes:
        if i % 3:
            reply: bytes = await client.execute("ECHO", f"m{i}")
            return reply
        async with asyncio.timeout(0.05):
            reply = await client.execute("ECHO", f"m{i}")
            return reply

    # BLPOP holds back every reply queued behind it, so the timed-out calls are certainly in
    # flight (written, unanswered) when they are cancelled.
    gate = asyncio.create_task(client.execute("BLPOP", "gate", 10))
    tasks = [asyncio.create_task(echo(i)) for i in range(300)]
    cancelled = tasks[::3]
    await asyncio.wait(cancelled)
    for task in cancelled:
        assert isinstance(task.exception(), TimeoutError)
    assert not gate.done()
    with redis_server.client() as admin:
        admin.lpush("gate", "open")
    async with asyncio.timeout(10):  # a desynced queue leaves the last caller waiting
        assert await gate == [b"gate", b"open"]
        for i, task in enumerate(tasks):
            if i % 3:
                assert await task == f"m{i}".encode()
        later = await asyncio.gather(*(client.execute("ECHO", f"l{i}") for i in range(100)))
    assert later == [f"l{i}".encode() for i in range(100)]


async def test_calls_cancelled_before_they_are_written_do_not_desync(client: RespClient) -> None:
    tasks = [asyncio.create_task(client.execute("ECHO", f"m{i}")) for i in range(200)]
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 2:
            assert result == f"m{i}".encode()
        else:
            assert isinstance(result, asyncio.CancelledError)
    assert await client.execute("ECHO", "after") == b"after"


# -- connection loss, restarts, close ----------------------------------------------------------


async def test_server_stop_fails_calls_fast_and_a_restart_recovers(
    redis_server: RedisServer, redis_url: str, parser: str
) -> None:
    script = Script("return redis.call('INCR', KEYS[1])")
    url = redis_url.rpartition("/")[0] + "/5"
    async with RespClient.from_url(url, connect_timeout=5, use_hiredis=parser == "hiredis") as c:
        assert await c.evalsha(script, ["n"], []) == 1
        blocked = asyncio.create_task(c.execute("BLPOP", "never", 30))
        with redis_server.client() as admin:
            await eventually(lambda: admin.info("clients")["blocked_clients"] == 1)
        try:
            redis_server.stop()
            started = time.monotonic()
            with pytest.raises(ConnectionError):
                await blocked
            for _ in range(3):
                with pytest.raises(ConnectionError, match="cannot connect"):
                    await c.execute("PING")
            assert time.monotonic() - started < FAST
        finally:
            redis_server.start()
        # Scripts do not survive a restart and SELECT must be sent again on the new connection.
        assert await c.evalsha(script, ["n"], []) == 1
    with redis_server.client(db=5) as admin:
        assert admin.get("n") == b"1"


async def test_a_killed_connection_fails_its_calls_and_the_next_call_reconnects(
    client: RespClient, redis_server: RedisServer
) -> None:
    blocked = asyncio.create_task(client.execute("BLPOP", "never", 30))
    with redis_server.client() as admin:
        await eventually(lambda: admin.info("clients")["blocked_clients"] == 1)
        admin.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(ConnectionError, match="lost"):
        await blocked
    assert await client.execute("ECHO", "back") == b"back"


async def test_connection_refused_fails_fast_for_every_caller() -> None:
    client = RespClient.from_url(f"redis://{LOOPBACK}:{free_port()}/0", connect_timeout=10)
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.execute("PING") for _ in range(50)), return_exceptions=True
    )
    assert time.monotonic() - started < FAST
    for result in results:
        assert isinstance(result, ConnectionError)
        assert isinstance(result, RespError) and isinstance(result, OSError)
    with pytest.raises(ConnectionError, match="cannot connect"):
        await client.execute("PING")  # and again: no cached failure, no retry loop
    await client.aclose()


async def test_a_server_that_never_answers_times_out_the_connect() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"redis://:secret@{LOOPBACK}:{port}/0"
        async with RespClient.from_url(url, connect_timeout=0.2) as client:
            started = time.monotonic()
            with pytest.raises(ConnectionError, match=r"within 0\.2s"):
                await client.execute("PING")
            assert time.monotonic() - started < FAST
    finally:
        server.close()
        await server.wait_closed()


class FakeServer:
    """A loopback TCP server answering every read with ``answer``; counts closed connections."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.closed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            writer.write(self.answer)
        self.closed += 1
        writer.close()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, LOOPBACK, 0)
        try:
            yield f"redis://{LOOPBACK}:{server.sockets[0].getsockname()[1]}/0"
        finally:
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize("answer", [b"?garbage\r\n", b":1_0\r\n", b"$5\r\nab"])
async def test_a_malformed_reply_fails_the_call(parser: str, answer: bytes) -> None:
    fake = FakeServer(answer)
    async with fake.serve() as url:
        async with RespClient.from_url(
            url, connect_timeout=5, use_hiredis=parser == "hiredis"
        ) as client:
            if answer.endswith(b"ab"):
                # Truncated, not malformed: the call waits, and a timeout is the caller's.
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await client.execute("PING")
            else:
                with pytest.raises(ConnectionError, match="malformed"):
                    await client.execute("PING")
                await eventually(lambda: fake.closed == 1)


async def test_a_reply_nobody_asked_for_drops_the_connection(parser: str) -> None:
    fake = FakeServer(b"+PONG\r\n+unasked\r\n")
    async with fake.serve() as url:
        async with RespClient.from_url(
            url, connect_timeout=5, use_hiredis=parser == "hiredis"
        ) as client:
            assert await client.execute("PING") == b"PONG"
            await eventually(lambda: fake.closed == 1)
            assert await client.execute("PING") == b"PONG"  # on a new connection


class SlowAuthServer:
    """Answers AUTH only once released, then PONG to everything; notes when the client hangs up."""

    def __init__(self) -> None:
        self.authed = asyncio.Event()
        self.release = asyncio.Event()
        self.hung_up = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"secret\r\n")
        self.authed.set()
        await self.release.wait()
        writer.write(b"+OK\r\n")
        while await reader.read(1024):
            writer.write(b"+PONG\r\n")
        self.hung_up.set()
        writer.close()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, LOOPBACK, 0)
        try:
            yield f"redis://:secret@{LOOPBACK}:{server.sockets[0].getsockname()[1]}/0"
        finally:
            server.close()
            await server.wait_closed()


async def test_a_caller_giving_up_does_not_abort_the_shared_connect() -> None:
    fake = SlowAuthServer()
    async with fake.serve() as url, RespClient.from_url(url, connect_timeout=5) as client:
        quitter = asyncio.create_task(client.execute("PING"))
        stayer = asyncio.create_task(client.execute("PING"))
        await fake.authed.wait()
        quitter.cancel()
        fake.release.set()
        assert await stayer == b"PONG"
        with pytest.raises(asyncio.CancelledError):
            await quitter


async def test_closing_during_a_connect_closes_the_new_connection() -> None:
    fake = SlowAuthServer()
    async with fake.serve() as url:
        client = RespClient.from_url(url, connect_timeout=5)
        call = asyncio.create_task(client.execute("PING"))
        await fake.authed.wait()
        client.close()
        fake.release.set()
        with pytest.raises(ConnectionError, match="closed"):
            await call
        await client.aclose()
        await asyncio.wait_for(fake.hung_up.wait(), 5)


async def test_close_fails_calls_in_flight_and_later_calls(
    client: RespClient, redis_server: RedisServer
) -> None:
    in_flight = asyncio.create_task(client.execute("BLPOP", "never", 30))
    with redis_server.client() as admin:
        await eventually(lambda: admin.info("clients")["blocked_clients"] == 1)
    not_started = asyncio.create_task(client.execute("PING"))
    client.close()
    for task in (in_flight, not_started):
        with pytest.raises(ConnectionError, match="closed"):
            await task
    with pytest.raises(ConnectionError, match="closed"):
        await client.execute("PING")
    await client.aclose()
    await client.aclose()


# -- authentication, databases, unix sockets, TLS ----------------------------------------------


def require_password(server: RedisServer, password: str) -> None:
    """Protect a running server; set at run time because `RedisServer.start` waits for an
    unauthenticated PING to answer PONG."""
    with server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "alice", "on", ">wonder", "~*", "&*", "+@all")
        admin.config_set("requirepass", password)


async def test_password_and_acl_user(own_server: Callable[..., RedisServer]) -> None:
    server = own_server()
    require_password(server, "s3cr@t:/x y")
    base = f"{server.host}:{server.port}"
    url = f"redis://:s3cr%40t%3A%2Fx%20y@{base}/0"
    async with RespClient.from_url(url, connect_timeout=5) as client:
        assert await client.execute("ACL", "WHOAMI") == b"default"
        with server.client(password="s3cr@t:/x y") as admin:
            admin.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(ConnectionError):
            await client.execute("PING")  # the killed connection
        # AUTH is sent again on the new connection.
        assert await client.execute("ACL", "WHOAMI") == b"default"
    async with RespClient.from_url(f"redis://alice:wonder@{base}/0", connect_timeout=5) as client:
        assert await client.execute("ACL", "WHOAMI") == b"alice"
    async with RespClient.from_url(f"redis://{base}/0", connect_timeout=5) as client:
        with pytest.raises(ReplyError, match=r"^NOAUTH"):
            await client.execute("PING")


@pytest.mark.parametrize("credentials", [":wrong", "alice:wrong", "bob:wonder"])
async def test_wrong_credentials_are_a_clear_connection_error(
    own_server: Callable[..., RedisServer], credentials: str
) -> None:
    server = own_server()
    require_password(server, "right")
    url = f"redis://{credentials}@{server.host}:{server.port}/0"
    async with RespClient.from_url(url, connect_timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="refused the connection: WRONGPASS") as info:
            await client.execute("PING")
        assert time.monotonic() - started < FAST
        assert isinstance(info.value.__cause__, ReplyError)


async def test_select_db(client: RespClient, redis_url: str, redis_server: RedisServer) -> None:
    url = redis_url.rpartition("/")[0] + "/3"
    async with RespClient.from_url(url, connect_timeout=5) as db3:
        await db3.execute("SET", "k", "three")
    await client.execute("SET", "k", "zero")
    with redis_server.client(db=3) as admin:
        assert admin.get("k") == b"three"
    assert await client.execute("GET", "k") == b"zero"


async def test_unix_socket_with_db_and_password(
    own_server: Callable[..., RedisServer], socket_dir: Path
) -> None:
    socket = socket_dir / "redis.sock"
    server = own_server("--unixsocket", str(socket), "--unixsocketperm", "700")
    require_password(server, "pw")
    url = f"unix://{socket}?db=2&password=pw"
    async with RespClient.from_url(url, connect_timeout=5) as client:
        await client.execute("SET", "k", "over unix")
        info = await client.execute("CLIENT", "INFO")
    assert b" db=2 " in info and b" laddr=" + str(socket).encode() in info
    with server.client(db=2, password="pw") as admin:
        assert admin.get("k") == b"over unix"


async def test_tls(own_server: Callable[..., RedisServer], tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    tls_port = free_port()
    own_server(
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    url = f"rediss://{LOOPBACK}:{tls_port}/0"
    async with RespClient.from_url(f"{url}?ssl_cert_reqs=none", connect_timeout=5) as client:
        value = os.urandom(1 << 20)
        await client.execute("SET", "k", value)
        assert await client.execute("GET", "k") == value
    async with RespClient.from_url(url, connect_timeout=5) as client:
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.execute("PING")


@pytest.mark.parametrize(
    "url",
    ["http://localhost", "redis://localhost/x", "unix://", "unix:///tmp/redis.sock?db=y"],
)
def test_unusable_urls_are_refused_up_front(url: str) -> None:
    with pytest.raises(ValueError):
        RespClient.from_url(url, connect_timeout=1)


# -- parser parity -----------------------------------------------------------------------------

# A generated value is (RESP bytes, what a reader must return); errors compare by message.
Generated = tuple[bytes, Any]
crlf_free = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
leaves: st.SearchStrategy[Generated] = st.one_of(
    st.binary(max_size=300).map(lambda b: (b"$%d\r\n%s\r\n" % (len(b), b), b)),
    crlf_free.map(lambda b: (b"+%s\r\n" % b, b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: (b":%d\r\n" % n, n)),
    st.sampled_from([(b"$-1\r\n", None), (b"*-1\r\n", None)]),
    crlf_free.map(lambda b: (b"-%s\r\n" % b, ("error", b.decode("utf-8", "replace")))),
)


def arrays(children: st.SearchStrategy[Generated]) -> st.SearchStrategy[Generated]:
    def join(items: list[Generated]) -> Generated:
        data = b"*%d\r\n" % len(items) + b"".join(data for data, _ in items)
        return data, [value for _, value in items]

    return st.lists(children, max_size=6).map(join)


values = st.recursive(leaves, arrays, max_leaves=30)


def plain(reply: Any) -> Any:
    if isinstance(reply, ReplyError):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [plain(item) for item in reply]
    return reply


def read_all(reader: Reader, chunks: list[bytes]) -> list[Any]:
    replies = []
    for chunk in chunks:
        reader.feed(chunk)
        while (reply := reader.gets()) is not NEED_MORE:
            replies.append(plain(reply))
    return replies


@needs_hiredis
@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=5), st.data())
def test_hiredis_and_python_readers_agree(generated: list[Generated], data: st.DataObject) -> None:
    stream = b"".join(encoded for encoded, _ in generated)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    expected = [value for _, value in generated]
    assert read_all(PythonReader(), chunks) == expected
    assert read_all(new_reader(use_hiredis=True), chunks) == expected


@pytest.mark.parametrize("use_hiredis", [pytest.param(True, marks=needs_hiredis), False])
@pytest.mark.parametrize(
    "garbage", [b"?x\r\n", b"$abc\r\n", b":1_0\r\n", b": 5\r\n", b"*-2\r\n", b"$-7\r\n"]
)
def test_readers_refuse_malformed_replies(use_hiredis: bool, garbage: bytes) -> None:
    reader = new_reader(use_hiredis=use_hiredis)
    reader.feed(garbage)
    with pytest.raises(ProtocolError):
        reader.gets()


arguments = st.lists(
    st.one_of(st.binary(), st.text(), st.integers(), st.floats()), min_size=1, max_size=8
)


@needs_hiredis
@settings(max_examples=300, deadline=None)
@given(arguments)
def test_encode_matches_hiredis_pack_command(args: list[Any]) -> None:
    import hiredis

    assert encode(args) == hiredis.pack_command(tuple(args))
    reader = PythonReader()
    reader.feed(encode(args))
    assert reader.gets() == [as_bytes(arg) for arg in args]


def as_bytes(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return (arg if isinstance(arg, str) else repr(arg)).encode()

"""Request ids and W3C trace context: accepted, replaced, echoed and sent upstream."""

from __future__ import annotations

import re

import pytest
from aiohttp.web_request import BaseRequest

from spork_cli.middleware.request_id import request_id, traceparent
from tests.gateway.conftest import Gateway, expect_problem, json_of, single_service
from tests.support import Upstream

GENERATED = re.compile(r"[0-9a-f]{32}")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@pytest.mark.parametrize("incoming", ["abc-123", "req.1:2_3", "A" * 128])
async def test_well_formed_request_id_is_echoed_and_sent_upstream(
    gateway: Gateway, upstream: Upstream, incoming: str
) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.get("/x", headers={"X-Request-ID": incoming}) as response:
        assert response.status == 200
        assert response.headers["X-Request-ID"] == incoming
        seen = await json_of(response)
    assert seen["headers"]["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["has space", "semi;colon", "A" * 129, "", "ünïcode"])
async def test_malformed_request_id_is_replaced_in_response_and_upstream(
    gateway: Gateway, upstream: Upstream, incoming: str
) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.get("/x", headers={"X-Request-ID": incoming}) as response:
        assert response.status == 200
        echoed = response.headers["X-Request-ID"]
        seen = await json_of(response)
    assert echoed != incoming
    assert GENERATED.fullmatch(echoed)
    assert seen["headers"]["x-request-id"] == echoed


async def test_missing_request_id_is_generated_fresh_per_request(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    ids = []
    for _ in range(3):
        async with client.get("/x") as response:
            ids.append(response.headers["X-Request-ID"])
            assert (await json_of(response))["headers"]["x-request-id"] == ids[-1]
    assert all(GENERATED.fullmatch(rid) for rid in ids)
    assert len(set(ids)) == 3


async def test_upstream_request_id_header_is_replaced_by_the_gateways(
    gateway: Gateway, upstream: Upstream
) -> None:
    # The echo answers whatever it is sent; the response must carry the gateway's id, once.
    client = await gateway(single_service(upstream.url))
    async with client.get("/x", headers={"X-Request-ID": "mine"}) as response:
        assert response.headers.getall("X-Request-ID") == ["mine"]


async def test_error_responses_carry_the_request_id(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/api"}))
    async with client.get("/nowhere", headers={"X-Request-ID": "err-1"}) as response:
        body = await expect_problem(response, 404)
    assert body["request_id"] == "err-1"


async def test_traceparent_keeps_trace_id_with_a_new_parent_id(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-01"
    async with client.get("/x", headers={"traceparent": incoming}) as response:
        sent = (await json_of(response))["headers"]["traceparent"]
    match = TRACEPARENT.fullmatch(sent)
    assert match is not None
    assert match.group(1) == TRACE_ID
    assert match.group(2) != PARENT_ID
    assert match.group(2) != "0" * 16
    assert match.group(3) == "01"


async def test_traceparent_flags_are_kept(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.get("/x", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}) as r:
        sent = (await json_of(r))["headers"]["traceparent"]
    assert sent.startswith(f"00-{TRACE_ID}-")
    assert sent.endswith("-00")


@pytest.mark.parametrize(
    "incoming",
    [
        None,
        "garbage",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id is invalid
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id is invalid
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper-case hex is invalid
    ],
)
async def test_invalid_or_missing_traceparent_starts_a_new_trace(
    gateway: Gateway, upstream: Upstream, incoming: str | None
) -> None:
    client = await gateway(single_service(upstream.url))
    headers = {"traceparent": incoming} if incoming is not None else {}
    async with client.get("/x", headers=headers) as response:
        sent = (await json_of(response))["headers"]["traceparent"]
    match = TRACEPARENT.fullmatch(sent)
    assert match is not None
    assert match.group(1) not in (TRACE_ID, TRACE_ID.lower(), "0" * 32)
    assert match.group(2) != "0" * 16


def test_request_id_function_accepts_and_replaces() -> None:
    assert request_id("abc") == "abc"
    assert GENERATED.fullmatch(request_id(None))
    assert GENERATED.fullmatch(request_id("bad id"))


def test_traceparent_function_changes_only_the_parent_id() -> None:
    first = traceparent(f"00-{TRACE_ID}-{PARENT_ID}-01")
    second = traceparent(f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert first.split("-")[1] == second.split("-")[1] == TRACE_ID
    assert first.split("-")[2] != second.split("-")[2]


@pytest.mark.filterwarnings("error")
async def test_request_storage_raises_no_warnings(
    gateway: Gateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp warns once per key and process; forget earlier tests' requests so this one
    # sees what the first request of a fresh process sees.
    monkeypatch.setattr(BaseRequest, "_seen_str_keys", set())
    client = await gateway(single_service(upstream.url))
    async with client.get("/x") as response:
        assert response.status == 200

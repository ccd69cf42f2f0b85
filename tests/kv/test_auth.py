"""A password: AUTH and HELLO ... AUTH over RESP, a bearer token over HTTP, NOAUTH before
it, and no listening beyond loopback without one (Redis's protected mode)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from sdlab.kv import Store
from sdlab.kv.server import RespServer
from sdlab.kv.service import Exposed, check_exposure, create_app, is_loopback
from tests.kv.test_server import replies

PASSWORD = "s3cret-pw"


@pytest.fixture
async def guarded() -> AsyncIterator[RespServer]:
    async with Store("sqlite://", sweep_interval=0) as kv:  # the backend plays no part
        server = RespServer(kv, port=0, password=PASSWORD)
        await server.start()
        yield server
        await server.close()


async def test_redis_py_with_the_password_works_and_without_it_cannot(
    guarded: RespServer,
) -> None:
    for protocol in (2, 3):  # AUTH then HELLO; or HELLO 3 AUTH default <password>
        client = aioredis.Redis(port=guarded.port, password=PASSWORD, protocol=protocol)
        try:
            assert await client.set("k", "v")
            assert await client.get("k") == b"v"
            assert (await client.pipeline().incr("n").get("n").execute())[1] is not None
        finally:
            await client.aclose()
    for password in (None, "wrong"):
        client = aioredis.Redis(port=guarded.port, password=password)
        try:
            with pytest.raises((AuthenticationError, ResponseError)):
                await client.get("k")
        finally:
            await client.aclose()


# Sent to our server and to a real Redis with the same requirepass, reply for reply.
BEFORE_AND_AFTER_AUTH = """
GET k
SET k v
MULTI
NOSUCH x
GET
HELLO 3
HELLO 3 SETNAME x
HELLO 3 AUTH default
HELLO 3 AUTH default wrong
HELLO 4
HELLO abc
AUTH
AUTH wrong
AUTH default wrong
AUTH nobody {password}
AUTH a b c
AUTH {password}
GET k
AUTH default {password}
AUTH wrong
GET k
"""


async def test_replies_before_and_after_auth_match_real_redis(
    guarded: RespServer, servers: Any
) -> None:
    (private,) = servers.redis()
    admin = aioredis.Redis(port=private.port)
    try:
        await admin.config_set("requirepass", PASSWORD)
    finally:
        await admin.aclose()
    commands = [
        line.format(password=PASSWORD).split() for line in BEFORE_AND_AFTER_AUTH.split("\n")
    ]
    commands = [args for args in commands if args]
    ours = await replies(guarded.port, commands)
    theirs = await replies(private.port, commands)
    differ = [
        f"{' '.join(args)}: ours {a!r}, Redis {b!r}"
        for args, a, b in zip(commands, ours, theirs, strict=True)
        if a != b
    ]
    assert not differ, "\n".join(differ)


async def test_auth_without_a_server_password_matches_redis(redis_url: str) -> None:
    commands = [
        ["AUTH", "x"],
        ["AUTH", "default", "anything"],
        ["HELLO", "2", "AUTH", "default", "x"],
    ]
    async with Store("sqlite://", sweep_interval=0) as kv:
        server = RespServer(kv, port=0)
        await server.start()
        try:
            ours = await replies(server.port, commands)
        finally:
            await server.close()
    theirs = await replies(urlsplit(redis_url).port or 6379, commands)
    assert [reply.split(b"\r\n")[0] for reply in ours] == [
        reply.split(b"\r\n")[0] for reply in theirs
    ]


async def test_the_password_is_never_logged_or_listed(
    guarded: RespServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + PASSWORD
    refused, _, listed = await replies(
        guarded.port,
        [["AUTH", wrong], ["HELLO", "2", "AUTH", "default", PASSWORD], ["CLIENT", "LIST"]],
    )
    assert refused.startswith(b"-WRONGPASS")
    assert b"cmd=client|list" in listed
    assert PASSWORD.encode() not in refused + listed
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


async def test_http_needs_the_bearer_token() -> None:
    async with Store("sqlite://", sweep_interval=0) as kv:
        app = create_app(kv, password=PASSWORD)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kv") as http:
            refused = await http.put("/keys/k", content=b"v")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "Bearer" in refused.json()["detail"]
            assert PASSWORD not in refused.text
            wrong = await http.get("/stats", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert await kv.get("k") is None
            token = {"Authorization": f"Bearer {PASSWORD}"}
            assert (await http.put("/keys/k", content=b"v", headers=token)).status_code == 200
            assert (await http.get("/keys/k", headers=token)).content == b"v"


def test_no_password_means_loopback_only_unless_insecure() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_exposure(host, None, insecure=False)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(Exposed, match="no password"):
            check_exposure(host, None, insecure=False)
        check_exposure(host, PASSWORD, insecure=False)
        check_exposure(host, None, insecure=True)


async def test_noauth_comes_before_queueing_and_unknown_commands(guarded: RespServer) -> None:
    got = await replies(
        guarded.port, [["MULTI"], ["SET", "k", "v"], ["EXEC"], ["AUTH", PASSWORD], ["EXEC"]]
    )
    assert got == [b"-NOAUTH Authentication required.\r\n"] * 3 + [
        b"+OK\r\n",
        b"-ERR EXEC without MULTI\r\n",
    ]

"""The HTTP API, in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from sdlab.infra.pytest_plugin import Servers
from sdlab.kv import MAX_KEY_BYTES, BackendUnavailable, Store
from sdlab.kv.backends import PostgresBackend
from sdlab.kv.service import create_app
from tests.helpers import eventually


@pytest.fixture
async def http(backend_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with Store(backend_url, sweep_interval=0, max_value=1000) as kv:
        transport = httpx.ASGITransport(app=create_app(kv))
        async with httpx.AsyncClient(transport=transport, base_url="http://kv") as client:
            yield client


async def test_put_get_delete(http: httpx.AsyncClient) -> None:
    put = await http.put("/keys/users/42", content=b"\x00alice\xff")
    assert put.status_code == 200
    assert put.json() == {"key": "users/42", "stored": True, "bytes": 7, "ttl": None}
    got = await http.get("/keys/users/42")
    assert got.status_code == 200
    assert got.content == b"\x00alice\xff"
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["x-ttl"] == "-1"
    assert (await http.delete("/keys/users/42")).status_code == 204
    missing = await http.get("/keys/users/42")
    assert missing.status_code == 404
    assert "users/42" in missing.json()["detail"]
    assert (await http.delete("/keys/users/42")).status_code == 404


async def test_ttl_and_expiry(http: httpx.AsyncClient) -> None:
    assert (await http.put("/keys/short", params={"ttl": 0.2}, content=b"v")).status_code == 200
    got = await http.get("/keys/short")
    assert got.headers["x-ttl"] in ("0", "1")
    await asyncio.sleep(0.3)
    expired = await http.get("/keys/short")
    assert expired.status_code == 404
    assert "expired" in expired.json()["detail"]
    bad = await http.put("/keys/k", params={"ttl": -1}, content=b"v")
    assert bad.status_code == 422
    assert bad.json()["detail"]
    far = await http.put("/keys/k", params={"ttl": 1e300}, content=b"v")
    assert far.status_code == 422
    assert "time to live" in far.json()["detail"]


async def test_too_large_and_bad_keys(http: httpx.AsyncClient) -> None:
    big = await http.put("/keys/big", content=b"x" * 1001)
    assert big.status_code == 413
    assert "1000 bytes" in big.json()["detail"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(3):
            yield b"x" * 400

    streamed = await http.put("/keys/big", content=chunked())
    assert streamed.status_code == 413
    assert (await http.get("/keys/big")).status_code == 404
    long_key = await http.put("/keys/" + "k" * (MAX_KEY_BYTES + 1), content=b"v")
    assert long_key.status_code == 422
    assert f"at most {MAX_KEY_BYTES} bytes" in long_key.json()["detail"]
    assert (await http.get("/keys/" + "k" * (MAX_KEY_BYTES + 1))).status_code == 422


async def test_nx_and_xx_are_preconditions(http: httpx.AsyncClient) -> None:
    assert (await http.put("/keys/k", params={"xx": True}, content=b"1")).status_code == 412
    assert (await http.put("/keys/k", params={"nx": True}, content=b"1")).status_code == 200
    refused = await http.put("/keys/k", params={"nx": True}, content=b"2")
    assert refused.status_code == 412
    assert "exists already" in refused.json()["detail"]
    assert (await http.get("/keys/k")).content == b"1"
    both = await http.put("/keys/k", params={"nx": True, "xx": True}, content=b"2")
    assert both.status_code == 422


async def test_listing_keys_by_prefix(http: httpx.AsyncClient) -> None:
    for i in range(5):
        await http.put(f"/keys/logs/{i}", content=b"x")
    await http.put("/keys/other", content=b"x")
    first = (await http.get("/keys", params={"prefix": "logs/", "limit": 3})).json()
    assert first == {"keys": ["logs/0", "logs/1", "logs/2"], "next": "logs/2"}
    rest = (await http.get("/keys", params={"prefix": "logs/", "after": first["next"]})).json()
    assert rest == {"keys": ["logs/3", "logs/4"], "next": None}
    stats = (await http.get("/stats")).json()
    assert stats["writes"] == 6


async def test_paging_over_keys_that_are_not_utf8_comes_to_an_end(backend_url: str) -> None:
    # Keys set over RESP may be any bytes: `next` must lead past them all the same.
    async with Store(backend_url, sweep_interval=0) as kv:
        await kv.mset({b"bin\xff0": "x", b"bin\xff1": "x", b"bin\\xff": "x", b"bin%": "x"})
        transport = httpx.ASGITransport(app=create_app(kv))
        async with httpx.AsyncClient(transport=transport, base_url="http://kv") as http:
            seen: list[str] = []
            after = None
            for _ in range(10):
                params = {"prefix": "bin", "limit": 1} | ({"after": after} if after else {})
                page = (await http.get("/keys", params=params)).json()
                seen += page["keys"]
                after = page["next"]
                if after is None:
                    break
    assert seen == ["bin%", "bin\\xff", "bin\\xff0", "bin\\xff1"]  # the last two shown escaped
    assert after is None


async def test_a_key_path_is_the_bytes_the_client_escaped(backend_url: str) -> None:
    # Starlette decodes a path as UTF-8: %FF would be U+FFFD, and a key of other bytes.
    async with Store(backend_url, sweep_interval=0) as kv:
        transport = httpx.ASGITransport(app=create_app(kv))
        async with httpx.AsyncClient(transport=transport, base_url="http://kv") as http:
            put = await http.put("/keys/bin/%FF%00", content=b"v")
            assert put.status_code == 200
            assert put.json()["key"] == "bin/\\xff\x00"  # escaped where not UTF-8
            assert await kv.get(b"bin/\xff\x00") == b"v"
            assert await kv.get("bin/\ufffd\x00") is None
            await kv.set(b"\xfe", "set over RESP, say")
            assert (await http.get("/keys/%FE")).content == b"set over RESP, say"
            assert (await http.put("/keys/caf\u00e9", content=b"w")).status_code == 200
            assert await kv.get("caf\u00e9") == b"w"  # UTF-8 as before
            page = (await http.get("/keys", params={"prefix": "bin/", "limit": 1})).json()
            assert page["next"] == "bin/%FF%00"  # a listing's `next` names its key
            assert (await http.get(f"/keys/{page['next']}")).content == b"v"
            assert (await http.delete("/keys/bin/%FF%00")).status_code == 204
            missing = await http.get("/keys/bin/%FF%00")
            assert missing.json()["detail"].startswith("no key 'bin/\\\\xff\\x00'")
            escaped = await http.get("/%6Beys/k")  # Starlette's /keys/k, but where is the key?
            assert escaped.status_code == 422
            assert "starts with /keys/" in escaped.json()["detail"]


async def test_a_get_answers_the_ttl_of_the_value_it_answers(postgres_db: str) -> None:
    # A write that commits between the reads of the value and of its TTL: the one pooled
    # connection is the GET's, its read waits on a table lock, and a SET waits for the
    # connection (first in line); the lock goes, the GET reads, then the SET writes.
    async with Store(postgres_db, sweep_interval=0, pool_size=1) as kv:
        assert isinstance(kv.backend, PostgresBackend)
        pool = kv.backend.pool
        assert pool is not None

        async def pooled(field: str) -> int:
            return int(pool.stats()[field])

        await kv.set("k", "old", ttl=100)
        transport = httpx.ASGITransport(app=create_app(kv))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://kv") as http,
            await psycopg.AsyncConnection.connect(postgres_db) as admin,
        ):
            async with admin.transaction():
                await admin.execute(f"LOCK TABLE {kv.backend.dialect.table}")
                get = asyncio.create_task(http.get("/keys/k"))
                assert await eventually(lambda: pooled("in_use"), 1) == 1
                overwrite = asyncio.create_task(kv.set("k", "new"))  # no TTL
                assert await eventually(lambda: pooled("waiting"), 1) == 1
            got = await get
            await overwrite
    assert got.content == b"old"
    assert got.headers["x-ttl"] in ("99", "100")  # not "-1", the new value's


async def test_a_database_that_is_gone_is_a_503_with_a_detail(servers: Servers) -> None:
    (db,) = servers.postgres()
    async with Store(db.url, sweep_interval=0, timeout=1) as kv:
        transport = httpx.ASGITransport(app=create_app(kv), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://kv") as http:
            assert (await http.put("/keys/k", content=b"v")).status_code == 200
            await asyncio.to_thread(db.stop)
            for got in (await http.get("/keys/k"), await http.put("/keys/k", content=b"w")):
                assert got.status_code == 503
                assert got.json()["detail"].startswith(f"{kv.backend.name} failed: ")
            with pytest.raises(BackendUnavailable):  # the library's named error
                await kv.get("k")
            await asyncio.to_thread(db.start)
            await kv.close()
            closed = await http.get("/keys/k")
            assert closed.status_code == 503
            assert closed.json() == {"detail": "the store is closed"}

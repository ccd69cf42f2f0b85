"""The pool through a database restart, on private servers it may break."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sdlab.infra.instance import Instance
from sdlab.pool import MariaDB, Pool, PostgreSQL
from tests.helpers import eventually


async def server_side_connections(kind: str, url: str) -> int:
    """Client connections as the server counts them, not counting this one."""
    if kind == "mysql":
        admin = await MariaDB(url).connect()
        async with admin.cursor() as cur:
            await cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE COMMAND <> 'Daemon' AND ID <> CONNECTION_ID()"
            )
            ((count,),) = await cur.fetchall()
        await admin.ensure_closed()
        return int(count)
    admin = await PostgreSQL(url).connect()
    async with admin:
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE "
            "backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        (count,) = await cur.fetchone()  # type: ignore[misc]
    return int(count)


async def query(kind: str, conn: Any) -> None:
    if kind == "mysql":
        async with conn.cursor() as cur:
            await cur.execute("SELECT SLEEP(0.005)")
            await cur.fetchall()
        await conn.commit()
    else:
        await conn.execute("SELECT pg_sleep(0.005)")
        await conn.commit()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mysql", "postgres"])
async def test_the_pool_rides_out_a_server_restart(kind: str, servers: Any) -> None:
    (server,) = servers.mariadb() if kind == "mysql" else servers.postgres()
    connector = MariaDB(server.url) if kind == "mysql" else PostgreSQL(server.url)
    pool = Pool(connector, min_size=10, timeout=30, name=f"{kind}-restart")
    await pool.open()
    failures: list[tuple[float, BaseException]] = []  # (when the request began, error)
    done = 0
    stop = asyncio.Event()

    async def worker() -> None:
        nonlocal done
        while not stop.is_set():
            began = time.monotonic()
            try:
                async with pool.connection() as conn:
                    await query(kind, conn)
                done += 1
            except Exception as exc:
                failures.append((began, exc))
                await asyncio.sleep(0.01)

    workers = [asyncio.create_task(worker()) for _ in range(50)]
    await asyncio.sleep(1.0)
    before = done
    await asyncio.to_thread(restart, server)
    back = time.monotonic()
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*workers)

    assert before > 100, "the workers were not busy before the restart"
    assert done > before + 100, "the pool did not recover after the restart"
    late = [exc for began, exc in failures if began > back]
    assert not late, f"{len(late)} requests begun after the server was back failed: {late[:3]}"
    await pool.open(wait=True, timeout=5)  # refilled to min_size
    stats = pool.stats()
    assert (stats["size"], stats["opening"]) == (10, 0)
    assert stats["connections_lost"] + stats["connections_failed"] > 0  # it did notice
    counted = lambda: server_side_connections(kind, server.url)  # noqa: E731
    assert await eventually(counted, 10) == 10  # no connection leaked through the restart
    await pool.close()
    assert await eventually(counted, 0) == 0


def restart(server: Instance) -> None:
    server.stop()
    time.sleep(0.5)  # the server stays down a moment, as a real restart does
    server.start()

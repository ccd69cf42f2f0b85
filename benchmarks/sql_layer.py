"""What the shared SQL layer costs on a hot path, beside the bare pool and SQLAlchemy Core.

One short transaction, run N times in a row on one connection at a time
(BEGIN; UPDATE one row; SELECT it; COMMIT), three ways:

    bare     sdlab.pool + the driver's own calls (what kv and polling did before)
    sdlab    sdlab.sql.Database.transaction() + Session.run
    sqla     SQLAlchemy 2 Core, AsyncEngine.begin() + text(), same drivers

    .venv/bin/python benchmarks/sql_layer.py [N]

Prints microseconds per transaction (best of 5 rounds) and each one's ratio to bare.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from sdlab import infra, sql
from sdlab.pool import MariaDB, Pool, PostgreSQL

UPDATE = "UPDATE bench SET n = n + 1 WHERE id = 1"
SELECT = "SELECT n FROM bench WHERE id = 1"


async def best(n: int, once: Callable[[], Awaitable[Any]]) -> float:
    """Microseconds per call, best of 5 rounds of n."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await once()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return min(rounds)


async def bare(url: str, n: int) -> float:
    mariadb = sql.engine_of(url) == "mariadb"
    connector = MariaDB(url, autocommit=True) if mariadb else PostgreSQL(url, autocommit=True)
    async with Pool(connector, min_size=1, max_size=1) as pool:

        async def once() -> None:
            async with pool.connection() as conn:
                if mariadb:
                    await conn.begin()
                    async with conn.cursor() as cur:
                        await cur.execute(UPDATE)
                        await cur.execute(SELECT)
                        await cur.fetchall()
                    await conn.commit()
                else:
                    async with conn.transaction():
                        await conn.execute(UPDATE)
                        await (await conn.execute(SELECT)).fetchall()

        return await best(n, once)


async def layer(url: str, n: int) -> float:
    async with sql.Database(url, min_size=1, max_size=1) as db:

        async def once() -> None:
            async with db.transaction() as tx:
                await tx.run(UPDATE)
                await tx.run(SELECT)

        return await best(n, once)


async def sqla(url: str, n: int) -> float:
    driver = "mysql+asyncmy" if sql.engine_of(url) == "mariadb" else "postgresql+psycopg"
    engine = create_async_engine(driver + url[url.index("://") :], pool_size=1)
    try:

        async def once() -> None:
            async with engine.begin() as conn:
                await conn.execute(text(UPDATE))
                (await conn.execute(text(SELECT))).fetchall()

        return await best(n, once)
    finally:
        await engine.dispose()


async def main(n: int) -> None:
    servers = {"MariaDB": infra.endpoint("mysql").url, "PostgreSQL": infra.endpoint("postgres").url}
    print(f"{n} transactions (BEGIN; UPDATE; SELECT; COMMIT), best of 5, us per transaction")
    print(f"{'engine':<11} {'bare':>7} {'sdlab.sql':>16} {'SQLAlchemy Core':>22}")
    for title, server in servers.items():
        async with sql.scratch_database(server, prefix="bench_sql") as url:
            async with sql.Database(url) as db:
                await db.execute("CREATE TABLE bench (id INT PRIMARY KEY, n INT)")
                await db.execute("INSERT INTO bench VALUES (1, 0)")
            b, s, a = await bare(url, n), await layer(url, n), await sqla(url, n)
            print(f"{title:<11} {b:7.0f} {s:7.0f} ({s / b:4.2f}x) {a:12.0f} ({a / b:4.2f}x)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))

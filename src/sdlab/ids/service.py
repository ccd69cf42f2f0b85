"""The id service over HTTP, and the generators behind it and behind `sdlab ids gen`.

    POST /ids/{kind}?count=N              N ids of a kind, as decimal strings
    POST /ids/central/{service}?count=N   N ids from the central counter of `service`
    GET  /decode/{id}?kind=snowflake      the id's time, machine or shard, and sequence

Ids are strings in JSON: 64- and 128-bit integers do not survive JavaScript numbers.
(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from sdlab.ids import kinds
from sdlab.ids.central import BatchClient, CounterTable
from sdlab.ids.instagram import install as install_instagram
from sdlab.ids.layout import InvalidId
from sdlab.ids.lease import MachineLease
from sdlab.ids.simple import SimpleGenerator
from sdlab.ids.snowflake import ClockMovedBackwards, Snowflake
from sdlab.ids.tickets import NoTicketServer, TicketServers
from sdlab.infra.services import redis
from sdlab.locks import LockLost
from sdlab.pool import MariaDB, Pool, PostgreSQL

MAX_COUNT = 100_000
DATABASE = "sdlab_ids"

Kind = Enum("Kind", {k: k for k in (*kinds.LOCAL, *kinds.SERVER)}, type=str)  # type: ignore[misc]
Decodable = Enum("Decodable", {k: k for k in (*kinds.DECODABLE, "ulid", "uuid7")}, type=str)  # type: ignore[misc]


@dataclass
class Generators:
    """One generator of each kind, made on first use. Server-backed kinds reach their
    servers at the given URLs; a snowflake machine id is leased from Redis unless set."""

    state_dir: Path
    mysql_url: str = ""
    postgres_url: str = ""
    redis_url: str = ""
    machine: int | None = None
    ticket_urls: list[str] = field(default_factory=list)
    batch: int = 1000
    _made: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    _closers: list[Any] = field(default_factory=list)

    async def make(self, kind: str, count: int, *, service: str = "default") -> list[int]:
        if kind == "ulid":
            return [kinds.new_ulid() for _ in range(count)]
        if kind == "uuid7":
            return [kinds.new_uuid7() for _ in range(count)]
        if kind in ("snowflake", "simple"):
            try:
                if self.machine is None:
                    (await self._get("lease")).check()
                return (await self._get(kind)).next_ids(count)  # type: ignore[no-any-return]
            except LockLost:
                self._forget("lease", "snowflake", "simple")  # the next request leases anew
                raise
        if kind == "central":
            client = await self._get(f"central:{service}")
            return await client.next_ids(count)  # type: ignore[no-any-return]
        if kind in ("instagram", "ticket"):
            source = await self._get(kind)
            return [await source() for _ in range(count)]
        raise InvalidId(f"unknown kind {kind!r}")

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._made.clear()
        self._closers.clear()

    async def _get(self, key: str) -> Any:
        """The thing called `key`, built once even if many requests ask at once (a
        build may itself _get another key)."""
        if key not in self._made:
            # Built in a task of its own: a caller that gives up does not cancel the
            # build for the others waiting on it.
            task = asyncio.get_running_loop().create_task(self._build(key))
            self._made[key] = task

            def forget_failure(done: asyncio.Future[Any]) -> None:
                if done.cancelled() or done.exception() is not None:
                    self._made.pop(key, None)  # the next request tries again

            task.add_done_callback(forget_failure)
        return await asyncio.shield(self._made[key])

    def _forget(self, *keys: str) -> None:
        for key in keys:
            self._made.pop(key, None)

    async def _machine(self) -> int:
        if self.machine is not None:
            return self.machine
        lease = await self._get("lease")
        return lease.machine  # type: ignore[no-any-return]

    async def _build(self, key: str) -> Any:
        if key == "lease":
            client = redis.connect(self.redis_url)
            lease = await MachineLease.acquire(client)
            self._closers += [client.aclose, lease.release]
            return lease
        if key == "snowflake":
            if self.machine is not None:
                return Snowflake(self.machine)
            return Snowflake((await self._get("lease")).check)
        if key == "simple":
            machine = await self._machine()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            return SimpleGenerator(machine, self.state_dir / f"simple-{machine}.counter")
        if key.startswith("central:"):
            table = await self._get("counters")
            service = key.split(":", 1)[1]
            client = BatchClient(lambda n: table.allocate(service, n), batch=self.batch)
            self._closers.append(client.close)
            return client
        if key == "counters":
            admin = await MariaDB(self.mysql_url).connect()
            async with admin.cursor() as cur:
                await cur.execute("SET SESSION sql_notes = 0")
                await cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
            await admin.ensure_closed()
            pool = Pool(MariaDB(self.mysql_url.rstrip("/") + f"/{DATABASE}"), min_size=1)
            await pool.open()
            self._closers.append(pool.close)
            table = CounterTable(pool)
            await table.create()
            return table
        if key == "instagram":
            shard = (await self._machine()) % 8192
            schema = f"{DATABASE}_shard_{shard}"
            pool = Pool(PostgreSQL(self.postgres_url, autocommit=True), min_size=1)
            await pool.open()
            self._closers.append(pool.close)
            async with pool.connection() as conn:
                await install_instagram(conn, schema=schema, shard=shard)

            async def instagram() -> int:
                async with pool.connection() as conn:
                    cur = await conn.execute(f"SELECT {schema}.next_id()")
                    (value,) = await cur.fetchone()  # type: ignore[misc]
                return int(value)

            return instagram
        if key == "ticket":
            servers = TicketServers(
                self.ticket_urls
                or [self.mysql_url.rstrip("/") + f"/{DATABASE}_tickets_{i}" for i in (1, 2)]
            )
            await servers.create()
            self._closers.append(servers.close)
            return servers.next_id
        raise InvalidId(f"unknown kind {key!r}")


def create_app(generators: Generators) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await generators.close()

    app = FastAPI(title="sdlab ids", lifespan=lifespan)

    @app.exception_handler(LockLost)
    @app.exception_handler(ClockMovedBackwards)
    @app.exception_handler(NoTicketServer)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The generator cannot vouch for uniqueness right now: 503, try again."""
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    Count = Annotated[int, Query(ge=1, le=MAX_COUNT, description="How many ids.")]

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {"kinds": [k.value for k in Kind], "max_count": MAX_COUNT}

    @app.post("/ids/central/{service}")
    async def central(
        service: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")],
        count: Count = 1,
    ) -> dict[str, Any]:
        ids = await generators.make("central", count, service=service)
        return {"kind": "central", "service": service, "ids": [str(i) for i in ids]}

    @app.post("/ids/{kind}")
    async def make(kind: Kind, count: Count = 1) -> dict[str, Any]:
        ids = await generators.make(kind.value, count)
        return {"kind": kind.value, "ids": [str(i) for i in ids]}

    @app.get("/decode/{value}")
    async def decode(value: str, kind: Decodable = Decodable.snowflake) -> dict[str, Any]:  # type: ignore[attr-defined]
        try:
            parts = kinds.decode(kind.value, kinds.parse(value))
        except InvalidId as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        label = kinds.DECODABLE[kind.value].node_label if kind.value in kinds.DECODABLE else "node"
        return {"kind": kind.value, **parts.as_dict(label), "id": str(parts.id)}

    return app

"""The seed's users service over HTTP, on sharded users.

    POST   /users                     {"name", "email"} -> 201, the user with its shard
    GET    /users?limit=&cursor=&order=  {"users": [...], "cursor"}: merged over every shard
    GET    /users/{id}                the user
    PATCH  /users/{id}                {"name"?, "email"?} -> the user
    DELETE /users/{id}                204
    GET    /shards                    the map: version, router, shards (and users on each)
    POST   /reshard                   {"shards": N, "router"?} -> the move's report

A user is `{"id", "name", "email", "shard"}`; ids are JSON numbers (64-bit: JavaScript
clients should read them as strings). Errors are JSON with a `detail`: 404 no such
user, 422 a bad body, limit, order or cursor, 503 a shard that does not answer, named
(`"shard": "shard-1"`): users on the other shards keep working, a listing needs them all;
503 also when the catalog holding the shard map does not answer (when the map is read).
(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sdlab.pool import PoolError
from sdlab.sharding.repository import (
    ORDERS,
    BadCursor,
    ShardedUsers,
    ShardUnavailable,
    UserNotFound,
)
from sdlab.sharding.reshard import MoveReport, reshard
from sdlab.sharding.shardmap import ShardingError, shard_name
from sdlab.sql import ConnectionLost, DatabaseUnavailable, address_of

# Given the number of shards wanted, their URLs: the first ones of the current map, and
# new servers started by whoever serves (`sdlab sharding serve` starts private ones).
ShardSource = Callable[[int], Awaitable[list[str]]]

Name = Annotated[str, Field(min_length=1, max_length=200)]
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


class NewUser(BaseModel):
    name: Name
    email: Email


class UserChange(BaseModel):
    name: Name | None = None
    email: Email | None = None


class ReshardRequest(BaseModel):
    shards: int = Field(ge=1, le=64)
    router: str | None = None


def create_app(users: ShardedUsers, shard_source: ShardSource | None = None) -> FastAPI:
    """The app over an opened repository; `shard_source` enables `POST /reshard`."""
    app = FastAPI(title="sdlab sharding: users over shards")
    moving = asyncio.Lock()

    @app.exception_handler(UserNotFound)
    async def not_found(request: Request, exc: UserNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ShardUnavailable)
    async def shard_down(request: Request, exc: ShardUnavailable) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": str(exc), "shard": exc.shard, "address": exc.address},
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(BadCursor)
    async def bad_cursor(request: Request, exc: BadCursor) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    async def catalog_down(request: Request, exc: Exception) -> JSONResponse:
        # Shards' failures are ShardUnavailable; what is left is the catalog's.
        return JSONResponse(status_code=503, content={"detail": f"the shard map's catalog: {exc}"})

    for error in (DatabaseUnavailable, ConnectionLost, PoolError):
        app.add_exception_handler(error, catalog_down)

    @app.exception_handler(ShardingError)
    async def sharding_error(request: Request, exc: ShardingError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.post("/users", status_code=201)
    async def create_user(body: NewUser) -> dict[str, Any]:
        return (await users.insert(body.name, body.email)).as_dict()

    @app.get("/users")
    async def list_users(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
        order: Annotated[str, Query(pattern=f"^({'|'.join(ORDERS)})$")] = "id",
    ) -> dict[str, Any]:
        page = await users.page(limit=limit, cursor=cursor, order=order)
        return {"users": [u.as_dict() for u in page.users], "cursor": page.cursor}

    @app.get("/users/{user_id}")
    async def get_user(user_id: int) -> dict[str, Any]:
        return (await users.get(user_id)).as_dict()

    @app.patch("/users/{user_id}")
    async def change_user(user_id: int, body: UserChange) -> dict[str, Any]:
        return (await users.update(user_id, name=body.name, email=body.email)).as_dict()

    @app.delete("/users/{user_id}", status_code=204)
    async def delete_user(user_id: int) -> Response:
        await users.delete(user_id)
        return Response(status_code=204)

    @app.get("/shards")
    async def shards() -> dict[str, Any]:
        current = await users.reload()
        try:
            counts: dict[str, int] | None = await users.count()
        except ShardUnavailable:
            counts = None
        return {
            "version": current.version,
            "router": current.router,
            "moving": current.moving,
            "shards": [
                {
                    "shard": shard_name(i),
                    "address": address_of(url),
                    "users": None if counts is None else counts.get(shard_name(i)),
                }
                for i, url in enumerate(current.shards)
            ],
            "rerouted": users.rerouted,
        }

    @app.post("/reshard")
    async def move(body: ReshardRequest) -> dict[str, Any]:
        if shard_source is None:
            return JSONResponse(  # type: ignore[return-value]
                status_code=409, content={"detail": "this process cannot start shard servers"}
            )
        if moving.locked():
            return JSONResponse(  # type: ignore[return-value]
                status_code=409, content={"detail": "a move is already under way"}
            )
        async with moving:
            try:
                urls = await shard_source(body.shards)
                report: MoveReport = await reshard(users, urls, body.router)
            except ValueError as exc:
                return JSONResponse(status_code=422, content={"detail": str(exc)})  # type: ignore[return-value]
        return report.as_dict()

    return app

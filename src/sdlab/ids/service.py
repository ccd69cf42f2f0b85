"""The id service over HTTP, on the generators of `generators.py`.

    POST /ids/{kind}?count=N              N ids of a kind, in its text (format=int: decimal)
    POST /ids/central/{service}?count=N   N ids from the central counter of `service`
    GET  /decode/{id}?kind=snowflake      the id's time, machine or shard, and sequence

Ids are strings in JSON: 64- and 128-bit integers do not survive JavaScript numbers.
A kind's text is decimal, or ULID or UUID text (`kinds.py`); `format=int` asks for the
integer in decimal instead.
(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from sdlab.ids.central import SERVICE_NAME
from sdlab.ids.generators import Generators
from sdlab.ids.kinds import DECODE_DEFAULT, KINDS, DecodableName, KindName
from sdlab.ids.layout import InvalidId
from sdlab.ids.snowflake import ClockMovedBackwards
from sdlab.ids.tickets import NoTicketServer
from sdlab.locks import LockLost

MAX_COUNT = 100_000

__all__ = ["MAX_COUNT", "Format", "Generators", "create_app"]


class Format(StrEnum):
    """How ids are written in an answer."""

    text = "text"  # the kind's canonical text
    int = "int"  # the integer, in decimal


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
    AsFormat = Annotated[
        Format, Query(alias="format", description="text: the kind's own; int: decimal.")
    ]

    def written(kind: str, ids: list[int], form: Format) -> list[str]:
        return [str(i) for i in ids] if form is Format.int else KINDS[kind].texts(ids)

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {"kinds": list(KINDS), "max_count": MAX_COUNT}

    @app.post("/ids/central/{service}")
    async def central(
        service: Annotated[str, PathParam(pattern=SERVICE_NAME)],
        count: Count = 1,
        form: AsFormat = Format.text,
    ) -> dict[str, Any]:
        ids = await generators.make("central", count, service=service)
        return {"kind": "central", "service": service, "ids": written("central", ids, form)}

    @app.post("/ids/{kind}")
    async def make(
        kind: KindName, count: Count = 1, form: AsFormat = Format.text
    ) -> dict[str, Any]:
        ids = await generators.make(kind.value, count)
        return {"kind": kind.value, "ids": written(kind.value, ids, form)}

    @app.get("/decode/{value}")
    async def decode(value: str, kind: DecodableName = DECODE_DEFAULT) -> dict[str, Any]:
        chosen = KINDS[kind.value]
        try:
            return chosen.describe(chosen.read(value))
        except InvalidId as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    return app

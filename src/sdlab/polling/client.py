"""A client of the status service: short polls, long polls, and following a server.

async with PollingClient("http://127.0.0.1:8030") as client:
    await client.create("server-1")
    async for server in client.follow("server-1"):     # long polling
        print(server.status, server.version)           # ... until DONE
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from sdlab.polling.model import (
    AlreadyCreated,
    Conflict,
    CreationInProgress,
    Server,
    Status,
    UnknownServer,
)


class PollingClient:
    """HTTP calls to one service; errors come back as the library's exceptions."""

    def __init__(self, base_url: str, *, http: httpx.AsyncClient | None = None) -> None:
        # A long poll holds a request up to its timeout: no read timeout of our own.
        self.http = http or httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(5, read=None)
        )
        self._owned = http is None

    async def __aenter__(self) -> PollingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()

    async def create(self, server_id: str) -> Server:
        return Server.from_dict(self._check(await self.http.post(f"/create/{server_id}")))

    async def terminate(self, server_id: str) -> Server:
        return Server.from_dict(self._check(await self.http.post(f"/terminate/{server_id}")))

    async def servers(self) -> tuple[int, list[Server]]:
        body = self._check(await self.http.get("/servers"))
        return body["version"], [Server.from_dict(s) for s in body["servers"]]

    async def status(self, server_id: str) -> Server:
        """A short poll: the server as the database has it now."""
        return Server.from_dict(self._check(await self.http.get(f"/short/status/{server_id}")))

    async def long_status(
        self, server_id: str, since: int = 0, timeout: float = 30.0
    ) -> Server | None:
        """A long poll: the server once its version is newer than `since`; None if the
        server answered 304 after `timeout` seconds."""
        answer = await self.http.get(
            f"/long/status/{server_id}", params={"since": since, "timeout": timeout}
        )
        if answer.status_code == 304:
            return None
        return Server.from_dict(self._check(answer))

    async def follow(
        self,
        server_id: str,
        *,
        since: int = 0,
        timeout: float = 30.0,
        interval: float | None = None,
        until: Status | None = Status.DONE,
    ) -> AsyncIterator[Server]:
        """Yield the server at each new version, by long polling (or by short polling
        every `interval` seconds), until it reaches `until` (None: for ever)."""
        while True:
            if interval is None:
                server = await self.long_status(server_id, since, timeout)
            else:
                server = await self.status(server_id)
                if server.version <= since:
                    await asyncio.sleep(interval)
                    continue
            if server is None:
                continue
            since = server.version
            yield server
            if server.status is until:
                return
            if interval is not None:
                await asyncio.sleep(interval)

    @staticmethod
    def _check(answer: httpx.Response) -> Any:
        if answer.status_code == 404:
            raise UnknownServer(answer.url.path.rsplit("/", 1)[-1])
        if answer.status_code == 409:
            body = answer.json()
            server = Server.from_dict(body["server"])
            if server.status.in_progress:
                raise CreationInProgress(server)
            if server.status is Status.DONE:
                raise AlreadyCreated(server)
            raise Conflict(server, body["detail"])
        answer.raise_for_status()
        return answer.json()

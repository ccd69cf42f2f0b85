"""Who may write and who may read: writes only from the server's own pages (CSRF),
reads also from the configured origins (CORS), checked in a real Chromium, where
http://localhost:PORT and http://127.0.0.1:PORT are two origins of one server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sdlab.streamlogs import Plan
from tests.helpers import Proxy, eventually
from tests.streamlogs.conftest import Service, StartService


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "http://other.localhost"},
    ],
)
async def test_a_write_from_another_origin_is_403(
    service: Service, headers: dict[str, str]
) -> None:
    finished = service.runner.start(Plan(lines=1, interval=0))
    async with httpx.AsyncClient(base_url=service.url) as http:
        made = await http.post("/deployments", params={"lines": 1}, headers=headers)
        assert made.status_code == 403
        assert "cross-origin POST refused" in made.json()["detail"]
        await asyncio.sleep(0.05)  # the finished one is finished
        deleted = await http.delete(f"/deployments/{finished.id}", headers=headers)
        assert deleted.status_code == 403
        assert "cross-origin DELETE refused" in deleted.json()["detail"]
    assert [status.id for status in service.store.list()] == [finished.id]


async def test_writes_from_our_own_pages_and_from_curl_are_accepted(service: Service) -> None:
    ours = {"origin": service.url, "sec-fetch-site": "same-origin"}
    async with httpx.AsyncClient(base_url=service.url) as http:
        assert (
            await http.post("/deployments", params={"lines": 1}, headers=ours)
        ).status_code == 201
        assert (await http.post("/deployments", params={"lines": 1})).status_code == 201
        # Behind a TLS proxy the page's origin is https:// while we see http://; the
        # browser's own Sec-Fetch-Site says whether it is the same origin.
        proxied = {"origin": "https://deploy.example", "sec-fetch-site": "same-origin"}
        made = await http.post("/deployments", params={"lines": 1}, headers=proxied)
        assert made.status_code == 201


async def test_a_page_elsewhere_cannot_start_a_deployment(service: Service, page: Any) -> None:
    """CSRF: a page on another origin posts to the server from its visitor's browser
    (a no-cors fetch needs no permission to be sent)."""
    port = service.url.rsplit(":", 1)[1]
    await page.goto(f"http://localhost:{port}/api/stats")  # another origin
    await page.evaluate(
        """(url) => fetch(url, { method: "POST", mode: "no-cors" })""",
        f"{service.url}/deployments?lines=1&interval=0",
    )
    await asyncio.sleep(0.2)
    assert service.store.list() == []
    # The server's own page still starts deployments (its fetch is same-origin).
    await page.goto(service.url)
    await page.click("#new-deployment")
    await page.wait_for_url("**/deployments/*", timeout=10_000)
    assert len(service.store.list()) == 1


async def _follow_from(page: Any, origin: str, url: str) -> None:
    await page.goto(f"{origin}/api/stats")
    await page.evaluate(
        """(url) => {
            window.seen = { opens: 0, lines: [], ends: 0, errors: 0 };
            window.source = new EventSource(url);
            source.onopen = () => seen.opens++;
            source.onmessage = (event) => seen.lines.push(event.data);
            source.onerror = () => seen.errors++;
            source.addEventListener("end", () => { seen.ends++; source.close(); });
        }""",
        url,
    )


async def test_an_event_source_on_an_allowed_origin_follows_a_log_across_a_reconnect(
    start_service: StartService, page: Any, unused_port: int
) -> None:
    """The page is on http://localhost:PORT, the stream on 127.0.0.1 through a proxy
    that cuts the connection mid-stream: the browser reconnects with its Last-Event-ID
    (a header that needs CORS's permission too) and gets the rest, every line once."""
    allowed = f"http://localhost:{unused_port}"
    service = await start_service(port=unused_port, allow_origins=[allowed])
    deployment = service.runner.start(Plan(lines=40, interval=0.03))
    async with Proxy(unused_port) as proxy:
        await _follow_from(page, allowed, f"http://127.0.0.1:{proxy.port}/logs/{deployment.id}")
        await page.wait_for_function("seen.lines.length >= 5", timeout=10_000)
        proxy.cut()
        await page.wait_for_function("seen.ends === 1", timeout=30_000)
    seen = await page.evaluate("seen")
    assert seen["opens"] >= 2
    assert [line.split("step ")[1].split("/")[0] for line in seen["lines"]] == [
        str(n) for n in range(1, 41)
    ]


async def test_an_event_source_on_another_origin_is_refused(service: Service, page: Any) -> None:
    deployment = service.runner.start(Plan(lines=3, interval=0))
    port = service.url.rsplit(":", 1)[1]
    await _follow_from(page, f"http://localhost:{port}", f"{service.url}/logs/{deployment.id}")
    await page.wait_for_function("source.readyState === EventSource.CLOSED", timeout=10_000)
    seen = await page.evaluate("seen")
    assert (seen["opens"], seen["lines"], seen["errors"]) == (0, [], 1)
    assert await eventually(lambda: _async(service.clients()), 0) == 0


async def test_cors_headers_and_preflight(start_service: StartService) -> None:
    service = await start_service(allow_origins=["http://ops.example"])
    deployment = service.store.create()
    deployment.append("line")
    deployment.finish()
    async with httpx.AsyncClient(base_url=service.url) as http:
        allowed = {"origin": "http://ops.example"}
        for path in (f"/logs/{deployment.id}", "/api/deployments"):
            answer = await http.get(path, headers=allowed)
            assert answer.headers["access-control-allow-origin"] == "http://ops.example"
            assert answer.headers["vary"] == "origin"
            other = await http.get(path, headers={"origin": "http://evil.example"})
            assert "access-control-allow-origin" not in other.headers
        preflight = await http.options(
            f"/logs/{deployment.id}",
            headers={
                **allowed,
                "access-control-request-method": "GET",
                "access-control-request-headers": "last-event-id",
            },
        )
        assert preflight.status_code == 204
        assert "last-event-id" in preflight.headers["access-control-allow-headers"]
        # An allowed origin reads; it does not write.
        assert (await http.post("/deployments", headers=allowed)).status_code == 403


async def _async(value: object) -> object:
    return value

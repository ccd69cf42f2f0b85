"""The pages in a real headless Chromium: its own EventSource follows the log, shows
the status, and reconnects with Last-Event-ID when the server goes away."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sdlab.streamlogs import Plan
from tests.streamlogs.conftest import ServerProcess, Service

TIMEOUT_MS = 30_000


async def _lines(page: Any) -> list[str]:
    return await page.locator("#log .line").all_text_contents()  # type: ignore[no-any-return]


def _steps(lines: list[str]) -> list[int]:
    return [int(re.search(r"step (\d+)/", line).group(1)) for line in lines]  # type: ignore[union-attr]


async def _start_from_the_list(page: Any, lines: int, interval: float, shown: int) -> None:
    """Click "New deployment" on the list page; return once `shown` lines are on its page."""
    await page.fill("input[name=lines]", str(lines))
    await page.fill("input[name=interval]", str(interval))
    await page.click("#new-deployment")
    await page.wait_for_url(re.compile(r"/deployments/\w+$"), timeout=TIMEOUT_MS)
    await page.wait_for_function(
        f"document.querySelectorAll('#log .line').length >= {shown}", timeout=TIMEOUT_MS
    )


async def test_a_new_deployment_streams_live_to_finished(service: Service, page: Any) -> None:
    await page.goto(service.url)
    assert await page.text_content("#deployments") == "No deployments yet."
    await _start_from_the_list(page, lines=40, interval=0.05, shown=3)
    # Live: the page says running while lines are still arriving.
    deployment = service.store.list()[0]
    assert deployment.state == "running"
    assert await page.text_content("#status") == "running"
    await page.wait_for_selector("#status[data-state=finished]", timeout=TIMEOUT_MS)
    lines = await _lines(page)
    assert _steps(lines) == list(range(1, 41))
    assert await page.text_content("#count") == "40"
    # It followed the log: more lines than the box holds, scrolled to the last one.
    scroll = await page.eval_on_selector(
        "#log", "log => [log.scrollTop, log.clientHeight, log.scrollHeight]"
    )
    top, height, total = scroll
    assert total > height
    assert top + height >= total - 1
    # The list shows it, finished.
    await page.goto(service.url)
    row = page.locator(f"#deployments tr:has(a[href='/deployments/{deployment.id}'])")
    assert await row.locator(".state").text_content() == "finished"


async def test_log_lines_are_text_not_html(service: Service, page: Any) -> None:
    deployment = service.store.create()
    deployment.append("<b id=injected>bold</b><script>window.owned = 1</script>", "ok")
    deployment.finish("failed")
    await page.goto(f"{service.url}/deployments/{deployment.id}")
    await page.wait_for_selector("#status[data-state=failed]", timeout=TIMEOUT_MS)
    assert (await _lines(page))[0] == "<b id=injected>bold</b><script>window.owned = 1</script>"
    assert await page.locator("#injected").count() == 0
    assert await page.evaluate("window.owned") is None


async def test_a_finished_deployment_shows_whole_and_stays_closed(
    service: Service, page: Any
) -> None:
    deployment = service.runner.start(Plan(lines=5, interval=0))
    await page.goto(f"{service.url}/deployments/{deployment.id}")
    await page.wait_for_selector("#status[data-state=finished]", timeout=TIMEOUT_MS)
    assert _steps(await _lines(page)) == [1, 2, 3, 4, 5]
    # The page closed its EventSource on `end`: no reconnection, no client left.
    assert await page.evaluate("source.readyState") == 2
    assert service.clients() == 0


async def test_an_event_source_stops_after_the_end(service: Service, page: Any) -> None:
    """Any EventSource, not only our page's: when a response ends, the browser
    reconnects with the last id it saw. After the end that id is the log's last offset,
    and the answer is 204 No Content, which tells EventSource to stop for good (the
    spec's way), rather than the `end` event again, every `retry` ms, for ever."""
    deployment = service.runner.start(Plan(lines=3, interval=0))
    await page.goto(f"{service.url}/api/stats")
    await page.evaluate(
        """(url) => {
            window.seen = { opens: 0, lines: 0, ends: 0 };
            window.source = new EventSource(url);  // no handler closes it
            source.onopen = () => seen.opens++;
            source.onmessage = () => seen.lines++;
            source.addEventListener("end", () => seen.ends++);
        }""",
        f"/logs/{deployment.id}",
    )
    await page.wait_for_function("source.readyState === EventSource.CLOSED", timeout=10_000)
    assert await page.evaluate("seen") == {"opens": 1, "lines": 3, "ends": 1}


async def test_an_event_source_keeps_trying_a_server_that_shuts_down(
    service: Service, page: Any
) -> None:
    """A stream asked for while the server stops ends at once with a 200, and the
    browser reconnects after `retry` (to the next server, in a restart). After a 503 it
    would give up for good, and the page would never follow the log again."""
    deployment = service.store.create()
    await page.goto(f"{service.url}/api/stats")
    service.hub.end_streams()  # the first thing the server does when it stops
    await page.evaluate(
        """(url) => {
            window.seen = { opens: 0, errors: 0, states: [] };
            window.source = new EventSource(url);
            source.onopen = () => seen.opens++;
            source.onerror = () => { seen.errors++; seen.states.push(source.readyState); };
        }""",
        f"/logs/{deployment.id}",
    )
    await page.wait_for_function("seen.errors >= 2", timeout=10_000)
    await page.evaluate("source.close()")
    seen = await page.evaluate("seen")
    assert seen["opens"] >= 2
    assert set(seen["states"]) == {0}  # EventSource.CONNECTING: it tries again


async def test_a_page_that_missed_the_end_event_shows_the_final_state(
    service: Service, page: Any
) -> None:
    """The connection breaks after the last line, before the `end` event: the browser
    reconnects with the last line's id, gets 204 and stops; the page asks the API."""
    deployment = service.store.create()
    deployment.append("first", "last")  # ids 6 and 11
    deployment.finish("failed")
    served = 0

    async def cut_before_the_end(route: Any) -> None:
        nonlocal served
        served += 1
        if served == 1:
            body = "retry: 50\n\nid: 6\ndata: first\n\nid: 11\ndata: last\n\n"
            await route.fulfill(status=200, content_type="text/event-stream", body=body)
        else:
            await route.continue_()  # to the real server

    await page.route(f"**/logs/{deployment.id}", cut_before_the_end)
    await page.goto(f"{service.url}/deployments/{deployment.id}")
    await page.wait_for_selector("#status[data-state=failed]", timeout=TIMEOUT_MS)
    assert served == 2
    assert await _lines(page) == ["first", "last"]  # resumed after "last" (Playwright
    # does not show the Last-Event-ID header Chromium adds: the lines say it was sent)


@pytest.mark.slow
async def test_the_page_reconnects_after_a_server_restart(
    server_process: ServerProcess, page: Any
) -> None:
    """Kill the server mid-deployment: the page says "reconnecting"; start it again: the
    browser reconnects by itself with its Last-Event-ID, and the log goes on with no
    line missing or repeated."""
    await server_process.start()
    await page.goto(server_process.url)
    await _start_from_the_list(page, lines=40, interval=0.08, shown=5)
    await server_process.kill()
    await page.wait_for_selector("#status[data-state=reconnecting]", timeout=TIMEOUT_MS)
    before = len(await _lines(page))
    await server_process.start()
    await page.wait_for_selector("#status[data-state=running]", timeout=TIMEOUT_MS)
    await page.wait_for_selector("#status[data-state=finished]", timeout=60_000)
    lines = await _lines(page)
    assert len(lines) > before
    assert _steps(lines) == list(range(1, 41))

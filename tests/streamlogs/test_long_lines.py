"""Lines longer than an event (64 KiB): sent in pieces that say they go together, joined
again by the page, and resumable only where a piece ends."""

from __future__ import annotations

from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from sdlab.streamlogs.store import MAX_LINE
from tests.streamlogs.conftest import Service, read_events

# 200 KB with two-byte characters across the cuts: three cuts, none inside a character.
LONG = "a" + "é" * 50_000 + "z" * 100_000


async def test_a_long_line_arrives_as_a_message_and_its_continuations(service: Service) -> None:
    deployment = service.store.create()
    deployment.append("short", LONG, "after")
    deployment.finish()
    url = f"{service.url}/logs/{deployment.id}"
    events = await read_events(url)
    kinds = [e.event for e in events]
    assert kinds == ["message", "message", "more", "more", "more", "message", "end"]
    assert "".join(e.data for e in events[1:5]) == LONG
    # Every piece's id resumes, and what follows still says it goes on the line.
    for seen in range(1, 5):
        rest = await read_events(url, last_event_id=events[seen].id)
        assert _fields(rest) == _fields(events[seen + 1 :])


async def test_an_id_inside_a_long_line_that_no_piece_ends_at_is_refused(
    service: Service,
) -> None:
    """Resuming there would start mid-piece (it was accepted once it lay 64 KiB into
    the line)."""
    deployment = service.store.create()
    deployment.append("short", LONG, "after")
    url = f"{service.url}/logs/{deployment.id}"
    start, *cuts = [line.end for line in deployment.read(0, deployment.size())]
    async with httpx.AsyncClient() as http:
        for inside in (start + 10, start + MAX_LINE + 1_000, cuts[2] + 1, cuts[3] - 1):
            answer = await http.get(url, headers={"Last-Event-ID": str(inside)})
            assert answer.status_code == 400, inside
            assert "is not the id of an event of this log" in answer.json()["detail"]


async def test_a_resync_from_the_file_marks_continuations_too(service: Service) -> None:
    """A client behind the window reads the file from its cursor, inside the long line."""
    deployment = service.store.create()
    deployment.append(LONG)
    cuts = [line.end for line in deployment.read(0, deployment.size())]
    assert len(cuts) == 4
    events = await read_events(
        f"{service.url}/logs/{deployment.id}",
        last_event_id=str(cuts[1]),
        stop=lambda events: len(events) == 2,
    )
    assert [e.event for e in events] == ["more", "more"]
    assert [int(e.id) for e in events] == cuts[2:]


async def test_the_page_joins_a_long_line(service: Service, page: Any) -> None:
    deployment = service.store.create()
    deployment.append("short")
    await page.goto(f"{service.url}/deployments/{deployment.id}")
    await page.wait_for_function("document.querySelectorAll('#log .line').length === 1")
    deployment.append(LONG, "after")  # live, while the page follows the log
    deployment.finish()
    await page.wait_for_selector("#status[data-state=finished]", timeout=30_000)
    assert await page.locator("#log .line").all_text_contents() == ["short", LONG, "after"]
    assert await page.text_content("#count") == "3"


def _fields(events: list[ServerSentEvent]) -> list[tuple[str, str, str]]:
    return [(e.event, e.id, e.data) for e in events]

"""`sdlab checkin book` as a user runs it: the result and the map, or one line saying why not."""

from __future__ import annotations

from sdlab import sql
from tests.helpers import sdlab


def test_book_prints_the_run_and_the_map() -> None:
    done = sdlab("checkin", "book", "sequential", "--users", "20", "--db", "mysql")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sequential: ")
    assert "20 passengers told they have a seat, 20 seats assigned, 0 retries" in lines[0]
    # 1A..1F, 2A..2F, 3A..3F, 4A, 4B: one line per letter, one column per row
    assert lines[1:] == [
        f"{letter} " + "*" * rows + "x" * (20 - rows)
        for letter, rows in zip("ABCDEF", (4, 4, 3, 3, 3, 3), strict=True)
    ]


async def test_more_passengers_than_the_server_holds_is_one_line(postgres_url: str) -> None:
    probe = await sql.connect(postgres_url)
    try:
        limit = int(await probe.fetchval("SELECT current_setting('max_connections')::int"))
    finally:
        await probe.close()
    users = str(min(limit + 1, 1000))
    done = sdlab("checkin", "book", "for-update", "--users", users, "--db", postgres_url)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert f"{users} sessions are needed at once" in done.stderr
    assert "max_connections" in done.stderr

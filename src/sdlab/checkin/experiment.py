"""The seed's check-in experiment on MariaDB and PostgreSQL, then past the seed.

1. `checkin`: 120 passengers, one session each, all at once at a trip of 120 seats, with
   each of the four strategies, `runs` times on each engine: time to seat them all,
   seats assigned (what the database holds, not what passengers were told), retries,
   and the seat map; beside the seed's published table.
2. `checkin-trips`: 50 trips x 120 passengers over a pool of 20 sessions, all at once,
   in random order and trip by trip: seats per second, and the time from a passenger's
   arrival to their seat (p50, p99), per strategy.
3. `checkin-window`: everyone wants a window seat (40 of 120): pick one and lock it,
   against SKIP LOCKED among the windows, against no preference.

One session per passenger means 120+ sessions at once. A server that cannot hold them
(PostgreSQL's system server here allows 100) is replaced, for that engine, by a private
one sdlab starts with max_connections = 200, and the table says which it was.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self

from sdlab import infra, sql
from sdlab.bench import (
    Bench,
    Chart,
    Experiment,
    Headline,
    Latency,
    Outcome,
    Row,
    published,
    register,
)
from sdlab.checkin import schema, seatmap
from sdlab.checkin.booking import RESCAN, SEAT_TAKEN
from sdlab.checkin.strategies import (
    STRATEGIES,
    WINDOW_STRATEGIES,
    NotEnoughSessions,
    Passenger,
    Run,
    assigned,
    book,
    check_capacity,
    configure,
    sessions,
)

ENGINES = (("mysql", "MariaDB"), ("postgres", "PostgreSQL"))
PRIVATE_MAX_CONNECTIONS = 200
ORDERS = ("mixed", "by trip")
_MARGIN = 5  # sessions besides the passengers': the experiment's own, a pool's spare


@dataclass(frozen=True)
class Server:
    url: str
    label: str  # "MariaDB 10.11" or "PostgreSQL 15 (private)"


@asynccontextmanager
async def server_for(
    bench: Bench, service: str, title: str, sessions: int
) -> AsyncIterator[Server]:
    """The engine's usual server if it can hold `sessions` more sessions now, else a
    private one with max_connections = 200, stopped after the block."""
    endpoint = bench.endpoint(service)
    version = ".".join(endpoint.version.split(".")[:2]).split("-")[0]
    try:
        await check_capacity(endpoint.url, sessions + _MARGIN)
        yield Server(endpoint.url, f"{title} {version}")
        return
    except NotEnoughSessions:
        pass
    starter = infra.postgres if service == "postgres" else infra.mariadb
    option = "max_connections" if service == "postgres" else "max-connections"
    instances = await asyncio.to_thread(starter, 1, options={option: PRIVATE_MAX_CONNECTIONS})
    try:
        yield Server(instances[0].url, f"{title} {version} (private)")
    finally:
        await asyncio.to_thread(instances.close)


@asynccontextmanager
async def airline(server: Server, trips: int, users: int) -> AsyncIterator[tuple[str, list[int]]]:
    """A scratch database with `trips` trips of 120 seats and users 1..`users`."""
    async with sql.scratch_database(server.url, prefix="checkin_exp") as url:
        look = await sql.connect(url)
        try:
            await schema.create(look)
            await schema.add_users(look, 1, users)
            trip_ids = await schema.add_trips(look, trips)
        finally:
            await look.close()
        yield url, trip_ids


@dataclass(frozen=True)
class Flight:
    """One engine's trip of 120 seats, and a session of its own for each passenger."""

    server: Server
    title: str
    trip: int
    look: sql.Session  # the experiment's own session, to free seats and count them
    own: list[sql.Session]

    async def board(self, strategy: str) -> Run:
        """Free every seat, then let every passenger check in at once with `strategy`."""
        await schema.free_all(self.look, self.trip)
        crowd = [Passenger(u, self.trip, s.transaction) for u, s in enumerate(self.own, 1)]
        return await book(strategy, crowd)


async def one_trip(bench: Bench, users: int) -> AsyncGenerator[Flight, None]:
    """Each engine in turn: a scratch airline with one trip and `users` sessions."""
    for service, title in ENGINES:
        async with (
            server_for(bench, service, title, users) as server,
            airline(server, 1, users) as (url, (trip,)),
        ):
            look = await sql.connect(url)
            try:
                async with sessions(url, users) as own:
                    yield Flight(server, title, trip, look, list(own))
            finally:
                await look.close()


def _tally(runs: list[Run]) -> dict[str, int]:
    total: dict[str, int] = {}
    for run in runs:
        for key, n in run.tally.items():
            total[key] = total.get(key, 0) + n
    return total


@register
@dataclass
class SeedTable(Experiment):
    """120 passengers check in at once, each on a session of their own, to a trip of 120
    seats: sequentially, in parallel without a lock, with SELECT ... FOR UPDATE, and with
    FOR UPDATE SKIP LOCKED, on MariaDB and on PostgreSQL. Time to seat everyone (the
    median of the runs; sessions are open before the clock starts), seats the database
    holds afterwards, deadlocks and lock-wait timeouts retried, and the seat map."""

    name = "checkin"
    system = "checkin"
    title = "Airline check-in: 120 passengers, 120 seats, at once"
    services = ("mysql", "postgres")

    users: int = 120
    runs: int = 7

    @classmethod
    def quick(cls) -> Self:
        return cls(runs=2)

    async def run(self, bench: Bench) -> Outcome:
        seed = published("airline-checkin")
        rows: list[dict[str, Any]] = []
        maps: list[str] = []
        with bench.progress(
            "strategies x engines", total=len(ENGINES) * len(STRATEGIES)
        ) as advance:
            async with aclosing(one_trip(bench, self.users)) as flights:
                async for flight in flights:
                    for strategy in STRATEGIES:
                        runs, seated, taken = [], [], []
                        for _ in range(self.runs):
                            runs.append(await flight.board(strategy))
                            seated.append(await assigned(flight.look, [flight.trip]))
                            taken = await seatmap.taken_seats(flight.look, flight.trip)
                        rows.append(self._row(flight.server, strategy, runs, seated, seed))
                        maps.append(
                            f"{flight.server.label}, {strategy} (last run: {seated[-1]} of "
                            f"{self.users} seated):\n\n```\n"
                            f"{seatmap.text(seatmap.render(taken))}\n```"
                        )
                        advance()
        return Outcome(
            rows,
            chart=Chart("run", ["time (ms)", "seed (ms)"], ylabel="ms to seat 120 passengers"),
            published=seed,
            notes=self._notes(rows) + maps,
        )

    def _row(
        self, server: Server, strategy: str, runs: list[Run], seated: list[int], seed: Any
    ) -> dict[str, Any]:
        tally = _tally(runs)
        return {
            "run": f"{server.label.split(' ')[0]}: {strategy}",
            "server": server.label,
            "strategy": strategy,
            "time (ms)": statistics.median(r.ms for r in runs),
            "seed (ms)": seed.lookup("time (ms)", strategy=strategy),
            "seats assigned": statistics.median_low(seated),
            "fewest": min(seated),
            "seed seats": seed.lookup("seats assigned", strategy=strategy),
            "told a seat": statistics.median_low(r.told for r in runs),
            "retries": sum(r.retries for r in runs),
            "retried": ", ".join(
                f"{k} {n}" for k, n in sorted(tally.items()) if k not in (RESCAN, SEAT_TAKEN)
            )
            or "-",
            "SKIP LOCKED rescans": tally.get(RESCAN, 0),
        }

    def _notes(self, rows: list[dict[str, Any]]) -> list[str]:
        notes = [
            f"{self.runs} runs per strategy and engine; time is the median, seats assigned "
            "the median (fewest: the worst run), retries the total over the runs.",
        ]
        for row in rows:
            if row["strategy"] == "parallel, no lock":
                notes.append(
                    f"{row['server']}, no lock: {row['told a seat']} passengers were told "
                    f"they have a seat, the database holds {row['seats assigned']}. Every "
                    "passenger read the first free seat before anyone wrote it (all 120 "
                    "transactions are under way at once), then wrote it: each UPDATE waits "
                    "for the row lock of the one before, and then overwrites it. The seed "
                    "got 9, its goroutines starting less at once than 120 asyncio tasks do."
                )
        return notes

    def headline(self, rows: list[Row]) -> Headline | None:
        """SKIP LOCKED over FOR UPDATE, on the engine where it gains least."""
        ratios = []
        for server in dict.fromkeys(r["server"] for r in rows):
            time = {r["strategy"]: r["time (ms)"] for r in rows if r["server"] == server}
            skip, lock = time["parallel, FOR UPDATE SKIP LOCKED"], time["parallel, FOR UPDATE"]
            ratios.append((skip / lock, server))
        worst, server = max(ratios)
        return Headline(
            f"SKIP LOCKED / FOR UPDATE time, 120 passengers ({server})",
            worst,
            unit="x",
            target=1.0,
            seed=24.38 / 54.88,  # the seed's table: 24.38 ms against 54.88 ms
        )


@register
@dataclass
class ManyTrips(Experiment):
    """Past the seed: 50 trips x 120 passengers at once over a pool of 20 sessions, the
    passengers in random order or trip by trip, each strategy on each engine: seats per
    second, and the time from a passenger's arrival (all at t = 0) to their seat, which
    includes waiting for a pooled session."""

    name = "checkin-trips"
    system = "checkin"
    title = "Airline check-in: 50 trips x 120 passengers over a pool of 20"
    services = ("mysql", "postgres")

    trips: int = 50
    users: int = 120
    pool: int = 20

    @classmethod
    def quick(cls) -> Self:
        return cls(trips=5)

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        shuffle = random.Random(15)
        total = len(ENGINES) * len(STRATEGIES) * len(ORDERS)
        with bench.progress("strategies x engines x orders", total=total) as advance:
            for service, title in ENGINES:
                async with (
                    server_for(bench, service, title, self.pool) as server,
                    airline(server, self.trips, self.users) as (url, trip_ids),
                    sql.Database(
                        url,
                        min_size=self.pool,
                        max_size=self.pool,
                        timeout=300,
                        configure=configure,
                    ) as db,
                ):
                    for order in ORDERS:
                        for strategy in STRATEGIES:
                            crowd = [
                                Passenger(u, trip, db.transaction)
                                for trip in trip_ids
                                for u in range(1, self.users + 1)
                            ]
                            if order == "mixed":
                                shuffle.shuffle(crowd)
                            rows.append(await self._one(db, trip_ids, crowd, strategy, order))
                            rows[-1]["server"] = server.label
                            rows[-1]["run"] = f"{title}, {order}: {strategy}"
                            advance()
        return Outcome(
            rows,
            chart=Chart("run", ["seats/s"], ylabel="seats assigned per second"),
            notes=[
                f"{self.trips} trips of 120 seats, {self.users} passengers each, all "
                f"arriving at once; a pool of {self.pool} sessions per engine. Mixed: the "
                "passengers in random order, so the 20 sessions are spread over the trips; "
                "by trip: trip 1's passengers first, then trip 2's, so the 20 sessions "
                "contend for one trip at a time (a flight's check-in opening). Seats/s "
                "counts the seats the database holds, so lost updates do not count.",
            ],
        )

    async def _one(
        self,
        db: sql.Database,
        trip_ids: list[int],
        crowd: list[Passenger],
        strategy: str,
        order: str,
    ) -> dict[str, Any]:
        async with db.session() as look:
            for trip in trip_ids:
                await schema.free_all(look, trip)
        done = await book(strategy, crowd)
        async with db.session() as look:
            seated = await assigned(look, trip_ids)
        wait = Latency()
        for booking in done.bookings:
            wait.record(int(booking.ms * 1e6))
        return {
            "run": "",
            "server": "",
            "order": order,
            "strategy": strategy,
            "passengers": len(crowd),
            "time (s)": done.ms / 1000,
            "seats/s": seated / (done.ms / 1000),
            "seats assigned": seated,
            "p50 to a seat (ms)": wait.percentile_ms(50),
            "p99 to a seat (ms)": wait.percentile_ms(99),
            "retries": done.retries,
        }


@register
@dataclass
class WindowSeat(Experiment):
    """Everyone wants a window seat: 120 passengers, one session each, a trip of 120
    seats of which 40 are by a window. Pick a free window seat (a plain read), lock it
    and take it if it is still free, else pick again; against the first unlocked free
    window seat (SKIP LOCKED); against no preference. Those without a window get any
    seat (SKIP LOCKED)."""

    name = "checkin-window"
    system = "checkin"
    title = "Airline check-in: everyone wants a window seat"
    services = ("mysql", "postgres")

    users: int = 120
    runs: int = 5

    @classmethod
    def quick(cls) -> Self:
        return cls(runs=2)

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        contenders = [*WINDOW_STRATEGIES, "parallel, FOR UPDATE SKIP LOCKED"]
        with bench.progress(
            "strategies x engines", total=len(ENGINES) * len(contenders)
        ) as advance:
            async with aclosing(one_trip(bench, self.users)) as flights:
                async for flight in flights:
                    for strategy in contenders:
                        runs, windows, seated = [], [], []
                        for _ in range(self.runs):
                            runs.append(await flight.board(strategy))
                            taken = await seatmap.taken_seats(flight.look, flight.trip)
                            seated.append(len(taken))
                            windows.append(sum(schema.PLANE.is_window(s) for s in taken))
                        tally = _tally(runs)
                        rows.append(
                            {
                                "run": f"{flight.title}: {strategy}",
                                "server": flight.server.label,
                                "strategy": strategy,
                                "time (ms)": statistics.median(r.ms for r in runs),
                                "seats assigned": statistics.median_low(seated),
                                "window seats": statistics.median_low(windows),
                                "seat taken, picked again": tally.get(SEAT_TAKEN, 0) / self.runs,
                                "SKIP LOCKED rescans": tally.get(RESCAN, 0) / self.runs,
                                "retries": sum(r.retries for r in runs),
                            }
                        )
                        advance()
        return Outcome(
            rows,
            chart=Chart("run", ["time (ms)"], ylabel="ms to seat 120 passengers"),
            notes=[
                f"{self.runs} runs each: time is the median; conflicts and rescans are per "
                "run. Pick and lock: every passenger reads the same first free window, so all "
                "queue on its lock and all but one find it taken, 40 times over.",
            ],
        )


ALL: list[type[Experiment]] = [SeedTable, ManyTrips, WindowSeat]

"""The ids experiments, tiny, on the real MariaDB: what they report must hold."""

from __future__ import annotations

from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.ids.experiment import KeyGrowth, Pagination, SaveInterval, Throughput, Upsert
from sdlab.infra.pytest_plugin import Endpoints


def bench(endpoints: Endpoints) -> Bench:
    return Bench({"mysql": endpoints["mysql"]}, Progress())


async def test_throughput_measures_every_generator(sdlab_endpoints: Endpoints) -> None:
    outcome = await Throughput(ids=2_000, server_ids=20, rounds=1).run(bench(sdlab_endpoints))
    by_name = {row["generator"]: row for row in outcome.rows}
    assert by_name["snowflake-id SnowflakeGenerator"]["vs snowflake-id"] == 1.0
    assert all(row["ids/s"] > 0 for row in outcome.rows)
    assert len(by_name) == 10
    headline = Throughput().headline(outcome.rows)
    assert headline is not None
    assert headline.value == by_name["sdlab Snowflake.next_id()"]["vs snowflake-id"]


async def test_save_interval_counts_its_saves(sdlab_endpoints: Endpoints) -> None:
    outcome = await SaveInterval(counts=(2_000,), intervals=(100, 1000)).run(bench(sdlab_endpoints))
    assert [(r["K"], r["saves"]) for r in outcome.rows] == [(100, 20), (1000, 2)]
    headline = SaveInterval(counts=(2_000,), intervals=(100, 1000)).headline(outcome.rows)
    assert headline is not None
    assert headline.figure == "2,000 ids, fsync: time at K=100 / at K=1,000"
    assert headline.seed == 681 / 315  # the seed's 1 M ids at the same K


async def test_storage_experiments_run_and_tell_the_truth(sdlab_endpoints: Endpoints) -> None:
    grown = await KeyGrowth(rounds=2, rows_per_round=2_000, connections=4, rows_per_insert=100).run(
        bench(sdlab_endpoints)
    )
    assert [r["rows before"] for r in grown.rows] == [0, 2_000]
    paged = await Pagination(rows=5_000, repeats=1).run(bench(sdlab_endpoints))
    assert [r["offset"] for r in paged.rows] == [0, 833, 2_500, 4_166]
    upserted = await Upsert(rows=5_000, upserts=200, connections=4).run(bench(sdlab_endpoints))
    in_place, replaced = upserted.rows
    assert in_place["rows given new ids"] == 0  # updated where they were
    assert replaced["rows given new ids"] == 200  # deleted and inserted again
    for experiment, outcome in [(KeyGrowth(), grown), (Pagination(), paged), (Upsert(), upserted)]:
        headline = experiment.headline(outcome.rows)
        assert headline is not None
        assert headline.value is not None
        assert headline.value > 0
        assert headline.seed

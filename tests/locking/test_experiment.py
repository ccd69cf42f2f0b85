"""The lab's locking experiments, small, end to end on the real servers."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.infra.pytest_plugin import Endpoints
from sdlab.locking import CASES
from sdlab.locking.experiment import AnomalyTable, CaseTimelines

pytestmark = pytest.mark.slow


def bench(endpoints: Endpoints) -> Bench:
    return Bench({s: endpoints[s] for s in ("mysql", "postgres")}, Progress())


async def test_the_case_timelines_are_as_expected(sdlab_endpoints: Endpoints) -> None:
    outcome = await CaseTimelines().run(bench(sdlab_endpoints))
    assert {row["case"] for row in outcome.rows} == set(CASES)
    assert {row["engine"] for row in outcome.rows} == {"MariaDB", "PostgreSQL"}
    assert outcome.notes[0].startswith("Every step of the")
    assert outcome.published is not None
    assert outcome.published.key == "sql-locking"
    waited = [r for r in outcome.rows if r["case"] == "deadlock" and "waited" in r["outcome"]]
    assert {r["engine"] for r in waited} == {"MariaDB", "PostgreSQL"}


async def test_the_anomaly_table_sits_beside_hermitage(sdlab_endpoints: Endpoints) -> None:
    outcome = await AnomalyTable.quick().run(bench(sdlab_endpoints))
    assert len(outcome.rows) == 9  # MariaDB's 4 levels and snapshot isolation, PostgreSQL's 4
    serializable = next(
        r for r in outcome.rows if (r["engine"], r["level"]) == ("PostgreSQL", "SERIALIZABLE")
    )
    assert serializable["G2"] == "✓ aborted"
    assert serializable["prevented"] == 10  # every anomaly, the chart's bar
    uncommitted = next(r for r in outcome.rows if r["level"] == "READ UNCOMMITTED")
    assert uncommitted["prevented"] < serializable["prevented"]
    assert outcome.published is not None
    assert outcome.notes[0] == (
        "70 of 70 cells match Hermitage's marks for the same level (MariaDB's against "
        "its MySQL/InnoDB rows); 20 of 20 cells of levels it has no row for match the "
        "row set beside them."
    )

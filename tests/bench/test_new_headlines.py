"""The headlines of checkin, lb, sharding, replica and locking, from rows shaped as their runs
return them."""

from __future__ import annotations

from sdlab.checkin.experiment import SeedTable
from sdlab.lb.experiment import Benchmark
from sdlab.locking.experiment import AnomalyTable
from sdlab.locking.hermitage import CODES, PUBLISHED
from sdlab.replica.experiment import FailoverLoss
from sdlab.sharding.experiment import Reads


def test_checkin_reports_the_engine_where_skip_locked_gains_least() -> None:
    rows = [
        {"server": s, "strategy": k, "time (ms)": t}
        for s, times in {"MariaDB": (60.0, 30.0), "PostgreSQL": (100.0, 80.0)}.items()
        for k, t in zip(
            ["parallel, FOR UPDATE", "parallel, FOR UPDATE SKIP LOCKED"], times, strict=True
        )
    ]
    headline = SeedTable().headline(rows)
    assert headline is not None
    assert headline.value == 0.8
    assert "PostgreSQL" in headline.figure
    assert headline.met


def test_lb_compares_new_connections_with_haproxy() -> None:
    rows = [
        {"run": "new connection, sdlab.lb", "requests/s": 5_000},
        {"run": "new connection, HAProxy", "requests/s": 10_000},
    ]
    headline = Benchmark().headline(rows)
    assert headline is not None
    assert (headline.value, headline.met) == (0.5, False)


def test_sharding_compares_the_router_with_a_read_straight_to_the_shard() -> None:
    rows = [
        {"read": "point read straight to its shard", "mean (ms)": 0.1},
        {"read": "point read through the router", "mean (ms)": 0.11},
    ]
    headline = Reads().headline(rows)
    assert headline is not None
    assert headline.met


def test_replica_counts_what_semi_sync_lost() -> None:
    rows = [
        {"replication": "async, replicas cut off 0.5 s before", "lost": 2299},
        {"replication": "semi-sync, replicas connected", "lost": 0},
        {"replication": "semi-sync, replicas cut off 0.5 s before", "lost": 1},
    ]
    headline = FailoverLoss().headline(rows)
    assert headline is not None
    assert (headline.value, headline.met) == (1, False)


def test_locking_counts_the_cells_unlike_hermitage_that_nothing_explains() -> None:
    published = PUBLISHED[("postgresql", "SERIALIZABLE")]
    row = {"engine": "PostgreSQL", "level": "SERIALIZABLE"}
    row |= {code: f"{published[code]} aborted" for code in CODES}
    headline = AnomalyTable().headline([row])
    assert headline is not None
    assert (headline.value, headline.met) == (0, True)
    row["G2"] = "—" if published["G2"] != "—" else "✓ aborted"
    headline = AnomalyTable().headline([row])
    assert headline is not None
    assert (headline.value, headline.met) == (1, False)

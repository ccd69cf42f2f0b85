from __future__ import annotations

import pytest

from sdlab.bench import published


def test_the_pool_table_is_there() -> None:
    pool = published("connection-pool")
    assert pool.columns == ["N", "no pool (ms)", "pool of 10 (ms)"]
    assert [row[0] for row in pool.rows] == [10, 100, 200, 500, 1000, 10000]
    assert pool.lookup("pool of 10 (ms)", N=10000) == 35776
    assert pool.lookup("no pool (ms)", N=200) == "error: Too many connections"
    assert pool.lookup("no pool (ms)", N=7) is None


@pytest.mark.parametrize(
    "key",
    [
        "airline-checkin",
        "ids-simple",
        "uuid-vs-autoincrement",
        "pagination",
        "upsert",
        "load-balancer",
    ],
)
def test_every_seed_table_is_rectangular(key: str) -> None:
    table = published(key)
    assert table.rows
    assert all(len(row) == len(table.columns) for row in table.rows)


def test_an_unknown_table_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="connection-pool"):
        published("nope")


def test_every_experiment_has_the_seeds_figures_or_a_line_on_what_it_showed() -> None:
    import inspect

    from sdlab import lab
    from sdlab.bench import showed

    for cls in lab.experiments().values():
        carries = "published(" in inspect.getsource(cls)
        assert carries or showed(cls.name, cls.system), f"{cls.name}: nothing on the seed"

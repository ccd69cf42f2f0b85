"""What an experiment is: a named object with parameters whose `run()` returns rows.

    @register
    @dataclass
    class Sleepy(Experiment):
        \"\"\"One paragraph on what it shows and why.\"\"\"

        name = "sleepy"                  # `sdlab lab run --only sleepy`
        system = "pool"                  # `--only pool` runs every experiment of the system
        title = "Sleeping tasks"
        services = ("mysql",)            # brought up before the run
        tasks: int = 1000                # parameters are dataclass fields

        @classmethod
        def quick(cls) -> Sleepy:        # the `--quick` size: under a minute
            return cls(tasks=100)

        async def run(self, bench: Bench) -> Outcome:
            ...
            return Outcome(rows=[{"N": 10, "time (ms)": 12.5}], chart=Chart("N", ["time (ms)"]))

        def headline(self, rows: list[Row]) -> Headline | None:   # optional: the summary
            return Headline("time, N=1,000", rows[-1]["time (ms)"], unit=" ms", target=20)

Rows are plain dicts whose keys are the column titles, units included. The harness
(`sdlab.lab`) renders them: a Rich table in the terminal, Markdown and JSON in the
report, and a PNG when the outcome names a chart. The report opens with each
experiment's headline (or "no headline declared").
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, TypeVar

from rich.progress import Progress

from sdlab.bench.seed import Published
from sdlab.infra.service import Endpoint

Row = dict[str, Any]


@dataclass(frozen=True)
class Chart:
    """One chart of an outcome's rows: `x` against one series per column in `y`.

    `group`: a column whose values split the rows, one series per value and y column
    (runs of 1 M and 10 M ids as two lines, not one zigzag). `baseline`: where bars
    start, for ratios near 1 (1.0 = perfect: 1.03 and 1.11 then look different)."""

    x: str
    y: list[str]
    kind: Literal["bar", "line"] = "bar"
    ylabel: str = ""
    logx: bool = False
    logy: bool = False
    group: str = ""
    baseline: float = 0.0


@dataclass(frozen=True)
class Headline:
    """The one figure an experiment exists to show, against the target it should meet
    and the seed's figure for the same thing (None: the seed published none)."""

    figure: str
    """What is measured, in a few words: "pool time / floor, N=10,000"."""
    value: float | None
    unit: str = ""
    """Printed right after each number: "x", " ms", "%"."""
    target: float | None = None
    better: Literal["lower", "higher"] = "lower"
    seed: float | None = None
    seed_note: str = ""
    """Where the seed's figure differs in kind: "at N=10,000", "6 M rows"."""

    @property
    def met(self) -> bool | None:
        """Whether ours meets the target (None: no target, or no figure)."""
        if self.target is None or self.value is None:
            return None
        if self.better == "lower":
            return self.value <= self.target
        return self.value >= self.target


@dataclass
class Outcome:
    """What an experiment found."""

    rows: list[Row]
    chart: Chart | None = None
    published: Published | None = None
    """The seed's figures for the same experiment, shown beside ours."""
    notes: list[str] = field(default_factory=list)
    """Short findings and caveats, printed under the table."""


class Bench:
    """What an experiment gets from the harness: services and progress bars."""

    def __init__(self, endpoints: Mapping[str, Endpoint], progress: Progress) -> None:
        self._endpoints = dict(endpoints)
        self._progress = progress

    def endpoint(self, service: str) -> Endpoint:
        """Where `service` answers (it was brought up before the run)."""
        try:
            return self._endpoints[service]
        except KeyError:
            raise KeyError(f"{service!r} is not among this experiment's services") from None

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """A progress bar for one phase; yields `advance(n=1)`."""
        task = self._progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            self._progress.advance(task, n)

        try:
            yield advance
        finally:
            self._progress.remove_task(task)


class Experiment(ABC):
    """Base class; subclasses are dataclasses whose fields are the parameters."""

    name: ClassVar[str]
    system: ClassVar[str]
    title: ClassVar[str]
    services: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def quick(cls) -> Self:
        """The small size, for `--quick`: finishes in under a minute."""
        return cls()

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass; the base is not

    @classmethod
    def description(cls) -> str:
        return " ".join((cls.__doc__ or "").split())

    @abstractmethod
    async def run(self, bench: Bench) -> Outcome:
        """Do the experiment against real services; return what it found."""

    def headline(self, rows: list[Row]) -> Headline | None:
        """The figure the report's summary shows for these rows; None: not declared."""
        return None


E = TypeVar("E", bound=type[Experiment])

REGISTRY: dict[str, type[Experiment]] = {}


def register(cls: E) -> E:
    """Make an experiment known to `sdlab lab` under its name."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"two experiments are called {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls

"""SQL locking: sessions' statements in a chosen interleaving, and isolation anomalies.

    from sdlab.locking import T1, T2, run

    timeline = await run(url, [T1("BEGIN"), T1("SELECT * FROM t WHERE id = 1 FOR UPDATE"),
                               T2("BEGIN"), T2("SELECT * FROM t WHERE id = 1 FOR UPDATE"),
                               T1("COMMIT"), T2("COMMIT")])
    timeline.events[3].waited_for     # ('T1',), as the server itself reported

`scheduler.py` plays the steps on real sessions and records the timeline; `waits.py`
asks each engine who waits for whom; `cases.py` holds the locking cases (the seed's
three and more), `anomalies.py` Hermitage's anomalies and how a run is judged,
`hermitage.py` Hermitage's published table.
"""

from sdlab.locking.anomalies import ANOMALIES, LEVELS, Anomaly, Cell, Level, Verdict, probe, table
from sdlab.locking.cases import CASES, Case, Expect, check, play
from sdlab.locking.scheduler import T1, T2, T3, Event, Step, Stuck, Timeline, run
from sdlab.locking.waits import LockWaits

__all__ = [
    "ANOMALIES",
    "CASES",
    "LEVELS",
    "T1",
    "T2",
    "T3",
    "Anomaly",
    "Case",
    "Cell",
    "Event",
    "Expect",
    "Level",
    "LockWaits",
    "Step",
    "Stuck",
    "Timeline",
    "Verdict",
    "check",
    "play",
    "probe",
    "run",
    "table",
]

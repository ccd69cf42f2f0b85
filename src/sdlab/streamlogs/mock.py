"""Mock deployments: a script of log lines, one every `interval` seconds, as the seed's
service had (it wrote a line every 0.5 s).

The runner only appends to the store and marks the end; it knows nothing of the clients.
A deployment cut short by a server restart is picked up where its log stops: the script
is the same for every run, so line k is line k whichever process writes it. A runner
writes only the deployments it has claimed (a lock on the log), so two servers on one
data directory never write one log twice over.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from sdlab.streamlogs.store import Deployment, DeploymentStore, LogFull, Status, now

log = logging.getLogger(__name__)

PHASES = [
    ("checkout", "receiving objects {k} of {n} for commit {sha}"),
    ("build", "compiling package {k} of {n}"),
    ("test", "test suite {k} of {n} passed"),
    ("image", "pushing layer {k} of {n} to the registry"),
    ("rollout", "replica {k} of {n} is healthy"),
]


def script_line(step: int, total: int) -> str:
    """Line `step` (1-based) of a deployment of `total` lines, without its timestamp:
    the steps before the last are spread evenly over the phases."""
    if step == total:
        return f"step {step}/{total} done: deployment finished"
    before_last = total - 1

    def first(phase: int) -> int:  # the first step of a phase
        return -(-phase * before_last // len(PHASES)) + 1

    phase = (step - 1) * len(PHASES) // before_last
    name, text = PHASES[phase]
    sha = f"{total * 2654435761 % 2**32:08x}"
    k, n = step - first(phase) + 1, first(phase + 1) - first(phase)
    return f"step {step}/{total} {name}: {text.format(sha=sha, k=k, n=n)}"


@dataclass(frozen=True)
class Plan:
    """What a mock deployment prints: `lines` lines, one every `interval` seconds."""

    lines: int = 40
    interval: float = 0.5

    @classmethod
    def of(cls, status: Status) -> Plan | None:
        try:
            return cls(int(status.plan["lines"]), float(status.plan["interval"]))
        except (KeyError, TypeError, ValueError):
            return None  # not one of ours


class MockRunner:
    """Runs mock deployments as tasks of this process's event loop. A deployment whose
    next line would take its log past `max_log_size` bytes stops there, failed, with
    the reason in its status."""

    def __init__(self, store: DeploymentStore, *, max_log_size: int | None = None) -> None:
        self.store = store
        self.max_log_size = max_log_size
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, plan: Plan) -> Deployment:
        deployment = self.store.create({"lines": plan.lines, "interval": plan.interval})
        self._run(deployment, plan)
        return deployment

    def resume(self) -> list[str]:
        """Carry on with every mock deployment the store says is running and no one
        writes (its server was stopped or killed in the middle); return their ids. A
        deployment another server (or this one) is writing is left to it."""
        resumed = []
        for status in self.store.list():
            plan = Plan.of(status)
            if status.state != "running" or plan is None or status.id in self._tasks:
                continue
            if self._run(self.store.get(status.id), plan):
                resumed.append(status.id)
        return resumed

    @property
    def running(self) -> list[str]:
        return list(self._tasks)

    async def stop(self) -> None:
        """Stop writing (the deployments stay `running` on disk, for `resume`)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    def _run(self, deployment: Deployment, plan: Plan) -> bool:
        """Write `deployment` from its last whole line on, in a task, if no one else
        writes it."""
        claim = deployment.claim()
        if claim is None:
            return False
        try:
            if deployment.status().done:  # it ended while we looked
                os.close(claim)
                return False
            done = _whole_lines(deployment)
        except BaseException:
            os.close(claim)
            raise

        def ended(_: asyncio.Task[None]) -> None:  # also if cancelled before it started
            os.close(claim)
            self._tasks.pop(deployment.id, None)

        task = asyncio.create_task(self._write(deployment, plan, done))
        self._tasks[deployment.id] = task
        task.add_done_callback(ended)
        return True

    async def _write(self, deployment: Deployment, plan: Plan, done: int) -> None:
        try:
            for step in range(done + 1, plan.lines + 1):
                await asyncio.sleep(plan.interval)
                line = f"{now()} {script_line(step, plan.lines)}"
                deployment.append(line, max_size=self.max_log_size)
            deployment.finish("finished")
        except LogFull as exc:
            log.warning("%s: stopped it, failed", exc)
            deployment.finish("failed", reason=str(exc))
        except OSError as exc:  # its folder was removed, the disk is full...
            log.warning("deployment %s: stopped writing its log: %s", deployment.id, exc)


def _whole_lines(deployment: Deployment) -> int:
    """Lines in the log, after cutting off a last line the writer did not finish."""
    data = deployment.log_path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        os.truncate(deployment.log_path, keep)
    return data.count(b"\n")

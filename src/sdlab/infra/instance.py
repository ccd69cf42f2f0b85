"""Private server instances: started on demand, on a free loopback port, under `.sdlab/`.

An `Instance` is one server process with its own data directory. Tests and
experiments start them to get servers they may break: stop, kill (a crash),
pause (SIGSTOP, a long GC or VM stall), restart on the same port and data.

Two lifetimes share this class:

- ephemeral (the default): owned by the process that started it, closed (process
  stopped, data directory removed) by `close()`, by leaving its `with` block, or
  at interpreter exit. If the owner dies without closing, `sweep_orphans()` (run
  by `sdlab infra up` and `down`) finds the instance by its recorded owner pid.
- persistent: the private primary that `sdlab infra up` starts when no server
  answers, and the members of a kept group (`start_many(..., group=...)`: the
  servers of a cluster a command starts for later commands, e.g. `sdlab replica up`);
  they outlive the command and are stopped by `sdlab infra down` (a group also by
  `close_group`).

Start-up goes through mirakuru, which launches the process in its own session and
waits until a real protocol probe answers (`Service.check`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

import port_for
import psutil
from mirakuru import Executor
from mirakuru.base import ENV_UUID
from mirakuru.exceptions import AlreadyRunning, ProcessExitedWithError, TimeoutExpired

from sdlab.infra.errors import StartFailed
from sdlab.infra.service import Launch, Service, log_excerpt, port_is_open, run_sync
from sdlab.infra.services import SERVICES, service

_START_ATTEMPTS = 3
T = TypeVar("T")


class _PortTaken(Exception):
    """Another process took the port we picked before our server could bind it."""


_PORT_TAKEN = re.compile(rb"[Aa]ddress already in use|EADDRINUSE")


def _said_port_taken(log: Path, offset: int) -> bool:
    """True if the server wrote, after `offset` in its log, that its port was taken."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return _PORT_TAKEN.search(f.read()) is not None
    except OSError:
        return False


class _Launcher(Executor):
    """mirakuru executor for a server: ready when its protocol probe answers."""

    def __init__(self, launch: Launch, *, port: int, instance: Instance, log: Any) -> None:
        popen_kwargs: dict[str, Any] = {}
        if launch.user:
            popen_kwargs = {"user": launch.user, "group": launch.user, "extra_groups": []}
        super().__init__(
            launch.argv,
            envvars=dict(launch.env),
            timeout=instance.service.start_timeout,
            sleep=0.05,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            popen_kwargs=popen_kwargs,
        )
        self._port, self._instance = port, instance

    @property
    def envvars(self) -> dict[str, str]:
        env = super().envvars
        if self._instance.persistent:
            # mirakuru kills every process carrying its marker when the launcher
            # exits; a persistent instance must outlive `sdlab infra up`.
            env.pop(ENV_UUID, None)
        return env

    def pre_start_check(self) -> bool:
        return port_is_open(self._port)

    def after_start_check(self) -> bool:
        return self._instance.answers()


class Instance:
    """One private server process with its own port and data directory."""

    def __init__(
        self,
        service: Service,
        home: Path,
        port: int,
        options: Mapping[str, Any] | None = None,
        *,
        persistent: bool = False,
        owner: dict[str, Any] | None = None,
    ) -> None:
        self.service = service
        self.home = home
        self.port = port
        self.options = dict(options or {})
        self.persistent = persistent
        self.owner = None if persistent else (owner or _me())
        """The process that must close an ephemeral instance: its pid and start time."""
        self._process: psutil.Process | None = None
        self._popen: subprocess.Popen[bytes] | None = None  # set when this process started it

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{self.service.title} instance 127.0.0.1:{self.port} ({state})>"

    @property
    def url(self) -> str:
        return self.service.url_for("127.0.0.1", self.port)

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return _alive(self._process)

    def answers(self, timeout: float = 2.0) -> bool:
        """True if the server answers a real protocol probe."""
        try:
            run_sync(lambda: self.service.check(self.url, timeout=timeout))
        except Exception:
            return False
        return True

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Launch the server (again) on its port and data; return once it answers."""
        if self.running:
            return self
        launch = self.service.launch(self.datadir, self.port, self.options)
        logged_before = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            launcher = _Launcher(launch, port=self.port, instance=self, log=log)
            try:
                launcher.start()
            except AlreadyRunning:
                raise _PortTaken from None
            except (ProcessExitedWithError, TimeoutExpired) as exc:
                # The holder may have let go of the port by the time we look, or hold it
                # without listening, so the server's own complaint counts too.
                if port_is_open(self.port) or _said_port_taken(self.log, logged_before):
                    raise _PortTaken from None
                reason = (
                    f"it did not answer within {self.service.start_timeout:g} s"
                    if isinstance(exc, TimeoutExpired)
                    else f"it exited with code {exc.exit_code}"
                )
                raise StartFailed(self.service.name, reason, log_excerpt(self.log)) from None
            assert launcher.process is not None
            # From here on the instance owns the process: taking the handle away from
            # mirakuru keeps its destructor from killing the server, and keeping it
            # lets `_end` reap our own child.
            self._popen, launcher.process = launcher.process, None
        self._process = psutil.Process(self._popen.pid)
        self._save()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown; the data directory stays, so `start()` brings it back."""
        self._end(self.service.stop_signal, timeout)

    def kill(self) -> None:
        """SIGKILL the server and its children: a crash, as far as clients can tell."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its directory. Safe to call twice."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, sig)  # the launcher made it a group leader

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if not _alive(process):
            self._process = None
            return
        assert process is not None
        try:
            family = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = [process]
        self._signal(sig)
        self._signal(signal.SIGCONT)  # a paused server cannot act on the signal otherwise
        _, survivors = psutil.wait_procs(family, timeout=timeout)
        for straggler in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                straggler.kill()
        psutil.wait_procs(survivors, timeout=5)
        if self._popen is not None:
            self._popen.wait(timeout=5)  # psutil may have reaped it; this records the exit
            self._popen = None
        self._process = None

    # -- records on disk, so another process can find the instance ---------------

    def _save(self) -> None:
        assert self._process is not None
        record = {
            "service": self.service.name,
            "port": self.port,
            "url": self.url,
            "pid": self._process.pid,
            "created": self._process.create_time(),
            "options": {key: str(value) for key, value in self.options.items()},
            "persistent": self.persistent,
            "owner": self.owner,
        }
        (self.home / "instance.json").write_text(json.dumps(record, indent=2))

    @classmethod
    def load(cls, home: Path) -> Instance:
        """Re-attach to an instance from its directory (its process may be gone)."""
        record = json.loads((home / "instance.json").read_text())
        instance = cls(
            service(record["service"]),
            home,
            record["port"],
            record["options"],
            persistent=record["persistent"],
            owner=record["owner"],
        )
        instance._process = _process(record["pid"], record["created"])
        return instance

    @property
    def orphaned(self) -> bool:
        """An ephemeral instance whose owning process is gone."""
        owner = self.owner
        return owner is not None and _process(owner["pid"], owner["created"]) is None


class Instances(list[Instance]):
    """Several private instances of one service, closed together."""

    @property
    def urls(self) -> list[str]:
        return [instance.url for instance in self]

    def close(self) -> None:
        in_parallel(Instance.close, self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start(
    service: Service,
    *,
    options: Mapping[str, Any] | None = None,
    persistent: bool = False,
    group: str | None = None,
    root: Path,
) -> Instance:
    """Start one private instance under `root` and return it once it answers.

    Ephemeral instances live in `root/run/<service>-<port>/`, the persistent one in
    `root/managed/<service>/`, a kept group's members (persistent too) in
    `root/managed/<group>/<service>-<port>/`.
    """
    if group is not None:
        _check_group(group)
        persistent = True
    for _ in range(_START_ATTEMPTS):
        port = port_for.select_random()
        if group is not None:
            home = root / "managed" / group / f"{service.name}-{port}"
        elif persistent:
            home = root / "managed" / service.name
        else:
            home = root / "run" / f"{service.name}-{port}"
        try:
            # Also reserves the port among us (the one persistent primary reuses its home).
            home.mkdir(parents=True, exist_ok=persistent and group is None)
        except FileExistsError:
            continue
        instance = Instance(service, home, port, options, persistent=persistent)
        if not persistent:
            with _live_lock:
                _live.add(instance)
        try:
            user = service.run_as()
            if user:
                shutil.chown(home, user, user)
            service.prepare(instance.datadir, instance.log, user=user)
            return instance.start()
        except _PortTaken:
            instance.close()
        except StartFailed as failure:
            failure.log = _keep_log(instance, root)
            instance.close()
            raise
        except BaseException:
            instance.close()
            raise
    raise StartFailed(service.name, f"no free port after {_START_ATTEMPTS} attempts")


def start_many(
    service: Service,
    n: int,
    *,
    options: Mapping[str, Any] | None,
    root: Path,
    group: str | None = None,
) -> Instances:
    """Start `n` instances in parallel; if one fails, close the others and raise.
    With `group`, they are kept after this process exits (see `group_members`)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    started = Instances()
    errors: list[BaseException] = []

    def one(_: int) -> None:
        try:
            instance = start(service, options=options, root=root, group=group)
        except BaseException as exc:
            errors.append(exc)
        else:
            started.append(instance)

    in_parallel(one, range(n))
    if errors:
        started.close()
        raise errors[0]
    started.sort(key=lambda instance: instance.port)
    return started


def group_members(root: Path, group: str) -> Instances:
    """The kept instances of `group` (running or not), by port; empty if none."""
    _check_group(group)
    members = Instances()
    for home in sorted((root / "managed" / group).glob("*")):
        try:
            members.append(Instance.load(home))
        except (OSError, ValueError, KeyError):
            continue  # half-created: close_group removes the directory anyway
    members.sort(key=lambda member: member.port)
    return members


def groups(root: Path) -> list[str]:
    """The names of the kept groups under `root`."""
    managed = root / "managed"
    if not managed.is_dir():
        return []
    return sorted(  # the other folders there hold the per-service persistent instances
        path.name for path in managed.iterdir() if path.is_dir() and path.name not in SERVICES
    )


def close_group(root: Path, group: str) -> Instances:
    """Stop a kept group's instances and remove their data; the ones it closed."""
    members = group_members(root, group)
    members.close()
    shutil.rmtree(root / "managed" / group, ignore_errors=True)
    return members


def _check_group(group: str) -> None:
    if not group.isidentifier() or group in SERVICES:
        raise ValueError(f"a group is named by an identifier that names no service (not {group!r})")


def sweep_orphans(root: Path) -> list[Instance]:
    """Close ephemeral instances whose owner died without closing them."""
    swept = []
    for home in sorted((root / "run").glob("*")):
        try:
            instance = Instance.load(home)
        except (OSError, ValueError, KeyError):
            # Half-created (its owner died while preparing it): remove once stale.
            if time.time() - home.stat().st_mtime > 60:
                shutil.rmtree(home, ignore_errors=True)
            continue
        if instance.orphaned:
            instance.close()
            swept.append(instance)
    return swept


# -- helpers ------------------------------------------------------------------------

_live: set[Instance] = set()
_live_lock = threading.Lock()


@atexit.register
def _close_live() -> None:
    with _live_lock:
        leftovers = list(_live)
    in_parallel(Instance.close, leftovers)


def in_parallel(fn: Callable[[T], object], items: Iterable[T]) -> None:
    """Call `fn` on each item, in threads (server start-up is mostly waiting)."""
    items = list(items)
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(len(items), thread_name_prefix="sdlab-instance") as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def _keep_log(instance: Instance, root: Path) -> Path | None:
    """Copy a failed instance's log out of its directory, which is about to go."""
    kept = root / "failed" / f"{instance.home.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(instance.log, kept)
    except OSError:
        return None
    return kept


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "created": psutil.Process().create_time()}


def _process(pid: int, created: float) -> psutil.Process | None:
    """The process with this pid if it is still the one that was recorded."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - created) < 0.01:
            return process
    except psutil.Error:
        pass
    return None


def _alive(process: psutil.Process | None) -> bool:
    if process is None:
        return False
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

"""Find each backing service, or start a private one: `up`, `status`, `down`, `endpoint`.

The order, for each service:

1. the URL in `SDLAB_<SERVICE>_URL`, if set (never second-guessed: if it does not
   answer, that is an error, not a reason to start something else);
2. the private instance this state directory already manages, if it answers;
3. the usual local port (MariaDB 3306, PostgreSQL 5432, Redis 6379, RabbitMQ 5672,
   Kafka 9092), if a server there answers its protocol;
4. otherwise (`up` only) a new private instance from the installed binaries, under
   `<state_dir>/managed/<service>/`, which outlives the command until `down`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sdlab.config import settings
from sdlab.failure import describe
from sdlab.infra import instance
from sdlab.infra.errors import BinaryNotFound, InfraError, ServiceUnreachable
from sdlab.infra.instance import Instance
from sdlab.infra.service import Endpoint, Service, run_sync
from sdlab.infra.services import SERVICES, service

Report = Callable[[str], None]


@dataclass(frozen=True)
class Health:
    """What `status` found for one service."""

    endpoint: Endpoint
    version: str | None = None
    problem: str | None = None
    """Why it does not answer, in one line (None when healthy)."""
    detail: str = ""
    """Where the address came from: the variable, the usual port, the private pid."""
    hint: str = ""

    @property
    def healthy(self) -> bool:
        return self.problem is None

    @property
    def title(self) -> str:
        return service(self.endpoint.service).title


def state_root() -> Path:
    return settings().state_dir.resolve()


def managed(svc: Service) -> Instance | None:
    """The persistent private instance of `svc` under the state directory, if any."""
    home = state_root() / "managed" / svc.name
    try:
        return Instance.load(home)
    except (OSError, ValueError, KeyError):
        return None


def _candidate(svc: Service) -> tuple[Endpoint, str]:
    """Where `status` looks for `svc`, and a few words on why there."""
    url = settings().service_url(svc.name)
    if url:
        return Endpoint(svc.name, url, "env"), svc.env_var
    own = managed(svc)
    if own is not None and own.running:
        return Endpoint(svc.name, own.url, "managed"), f"pid {own.pid}"
    return Endpoint(svc.name, svc.default_url, "local"), "usual port"


def _check_all(endpoints: list[Endpoint], timeout: float) -> list[str | BaseException]:
    async def gather() -> list[str | BaseException]:
        checks = (service(e.service).check(e.url, timeout) for e in endpoints)
        return await asyncio.gather(*checks, return_exceptions=True)

    return run_sync(gather)


def _names(names: Iterable[str] | None) -> list[Service]:
    return [service(name) for name in names] if names else list(SERVICES.values())


def status(names: Iterable[str] | None = None, *, timeout: float = 3.0) -> list[Health]:
    """Probe each service where it is expected to be; start nothing."""
    services = _names(names)
    found = [_candidate(svc) for svc in services]
    results = _check_all([endpoint for endpoint, _ in found], timeout)
    report = []
    for (endpoint, detail), result in zip(found, results, strict=True):
        if isinstance(result, BaseException):
            hint = {
                "local": "`sdlab infra up` starts a private instance",
                "env": f"{service(endpoint.service).env_var} points there",
                "managed": "`sdlab infra up` replaces it",
            }[endpoint.origin]
            report.append(Health(endpoint, problem=describe(result), detail=detail, hint=hint))
        else:
            report.append(Health(endpoint, version=result, detail=detail))
    return report


def endpoint(name: str, *, timeout: float = 3.0) -> Endpoint:
    """The address of a service that answers now; raises ServiceUnreachable if none does."""
    (health,) = status([name], timeout=timeout)
    if not health.healthy:
        assert health.problem is not None
        raise ServiceUnreachable(health.title, health.endpoint.address, health.problem)
    return Endpoint(
        health.endpoint.service, health.endpoint.url, health.endpoint.origin, health.version or ""
    )


def up(
    names: Iterable[str] | None = None,
    *,
    private: bool = False,
    install: bool = False,
    report: Report = lambda _: None,
) -> dict[str, Endpoint]:
    """Make every named service reachable; return where each one is.

    `private=True` skips the usual local ports (a private instance even if a system
    server runs). `install=True` first installs missing Debian packages, as root.
    """
    services = _names(names)
    root = state_root()
    for orphan in instance.sweep_orphans(root):
        report(f"removed an orphaned private {orphan.service.title} (its owner had exited)")
    if install:
        install_missing(services, report)

    found: dict[str, Endpoint] = {}
    to_check: list[Endpoint] = []
    for svc in services:
        url = settings().service_url(svc.name)
        if url:
            to_check.append(Endpoint(svc.name, url, "env"))
            continue
        own = managed(svc)
        if own is not None and own.running:
            to_check.append(Endpoint(svc.name, own.url, "managed"))
        elif own is not None:
            report(f"removing a stopped private {svc.title} left in {own.home}")
            own.close()
        if not private:
            to_check.append(Endpoint(svc.name, svc.default_url, "local"))

    for candidate, result in zip(to_check, _check_all(to_check, 3.0), strict=True):
        svc = service(candidate.service)
        if svc.name in found:
            continue  # an earlier candidate (managed before local) answered
        if not isinstance(result, BaseException):
            found[svc.name] = Endpoint(svc.name, candidate.url, candidate.origin, result)
        elif candidate.origin == "env":
            raise ServiceUnreachable(
                svc.title,
                candidate.address,
                describe(result),
                hint=f"{svc.env_var} points there; unset it to let sdlab find or start one",
            )

    missing = [svc for svc in services if svc.name not in found]
    for svc in missing:
        report(f"starting a private {svc.title} under {root / 'managed' / svc.name}")
    started: dict[str, Endpoint] = {}
    errors: list[BaseException] = []

    def start_one(svc: Service) -> None:
        try:
            own = managed(svc)
            if own is not None:
                own.close()  # it did not answer: replace it
            server = instance.start(svc, persistent=True, root=root)
            version = run_sync(lambda: svc.check(server.url))
            started[svc.name] = Endpoint(svc.name, server.url, "managed", version)
        except BaseException as exc:
            errors.append(exc)

    instance.in_parallel(start_one, missing)
    if errors:
        raise errors[0]
    found.update(started)
    return {svc.name: found[svc.name] for svc in services}


def down(report: Report = lambda _: None) -> list[Instance]:
    """Stop the private instances this state directory manages (kept groups too), and
    orphans; remove
    their data and the logs kept from failed starts. Servers sdlab did not start are
    left alone."""
    root = state_root()
    stopped = []
    for svc in SERVICES.values():
        own = managed(svc)
        if own is not None:
            report(f"stopping the private {svc.title} on 127.0.0.1:{own.port}")
            own.close()
            stopped.append(own)
    for group in instance.groups(root):
        for member in instance.close_group(root, group):
            report(
                f"stopped the private {member.service.title} on 127.0.0.1:{member.port} ({group})"
            )
            stopped.append(member)
    for orphan in instance.sweep_orphans(root):
        report(f"stopped an orphaned private {orphan.service.title} on 127.0.0.1:{orphan.port}")
        stopped.append(orphan)
    shutil.rmtree(root / "managed", ignore_errors=True)
    shutil.rmtree(root / "failed", ignore_errors=True)  # logs kept from failed starts
    return stopped


# Client programs the tests and experiments drive as a user would: a real browser for
# the web pages, redis-cli and redis-benchmark against Redis-protocol servers, wrk for HTTP
# load, HAProxy as the load balancer's peer (run as a private process, `infra.haproxy`).
# Program -> the Debian package that has it.
TOOLS = {
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "redis-benchmark": "redis-tools",
    "wrk": "wrk",
    "haproxy": "haproxy",
}


# Server plugins that experiments load at run time (INSTALL SONAME) into private
# servers: the file -> the Debian package that has it. Spider: sdlab.sharding's experiment.
PLUGINS = {"/usr/lib/mysql/plugin/ha_spider.so": "mariadb-plugin-spider"}


def install_missing(services: Iterable[Service], report: Report = lambda _: None) -> list[str]:
    """Install the Debian packages of services whose programs are missing, and of the
    client tools in TOOLS and server plugins in PLUGINS (as root).

    Returns the packages installed. Raises InfraError when some are missing and
    this process cannot install them.
    """
    needed = sorted(
        {svc.debian_package for svc in services if svc.debian_package and not _installed(svc)}
        | {package for program, package in TOOLS.items() if shutil.which(program) is None}
        | {package for path, package in PLUGINS.items() if not Path(path).exists()}
    )
    if not needed:
        return []
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *needed]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError(
            f"missing server packages: {', '.join(needed)}; install them with "
            f"`sudo {' '.join(command)}`, or point SDLAB_*_URL at running servers"
        )
    report(f"installing {', '.join(needed)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], command):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            output = done.stdout[-2000:] + done.stderr[-2000:]
            raise InfraError(f"`{' '.join(argv)}` failed:\n{output}")
    return needed


def _installed(svc: Service) -> bool:
    try:
        svc.programs()
    except BinaryNotFound:
        return False
    return True

"""Set up GTID replication from one primary to N replicas, and prove it works.

    await setup.build(primary_url, [replica_url, ...], semisync=False)

The steps, in order, each one a function of its own:

1. `prepare`: on every node, a replication user and an application user, created with
   the binary log off for the session (each node has its own; none reaches a replica
   twice), and semi-synchronous replication switched on if asked.
2. `seed`: each replica gets a consistent snapshot of the primary, not an empty start
   that must replay the whole binary log (which may have been purged). The snapshot is
   `mariadb-dump --single-transaction --gtid --master-data=2` of every user database,
   piped into the `mariadb` client on the replica with its binary log off. Why the dump
   and not a copy by hand: it reads one InnoDB snapshot and, from the server's
   `Binlog_snapshot_*` status, the GTID position of exactly that snapshot (so no global
   read lock is taken), and it already handles views, routines, triggers, events and
   character sets. The position comes back as the dump's `SET GLOBAL gtid_slave_pos`.
3. `attach`: `CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos`, `START SLAVE`: the
   replica asks for everything after the position it has applied, so a restart or a
   new primary needs no file name or offset. Replicas are `read_only`.
4. `verify`: both replication threads run, and a probe row written on the primary is
   read back on every replica (awaited with `MASTER_GTID_WAIT`).

DDL on the primary while a replica is being seeded is not safe: `--single-transaction`
does not lock out `ALTER TABLE` (the dump's own warning). The application user has no
READ_ONLY ADMIN privilege, so `read_only` stops its writes; root's it does not stop
(MariaDB 10.11 gives ALL PRIVILEGES READ_ONLY ADMIN), which is why switchover relies on
the application connecting as that user.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from sdlab import sql
from sdlab.replica.errors import ReplicationBroken
from sdlab.replica.topology import observe

SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")
PROBE_DATABASE = "sdlab_replica"


@dataclass(frozen=True)
class Login:
    user: str
    password: str


REPLICATION = Login("sdlab_repl", "sdlab-repl")
APPLICATION = Login("sdlab_app", "sdlab-app")
APPLICATION_GRANTS = (
    "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE VIEW,"
    " SHOW VIEW, TRIGGER, EVENT, CREATE ROUTINE, ALTER ROUTINE, EXECUTE,"
    " CREATE TEMPORARY TABLES, LOCK TABLES, SHOW DATABASES,"
    " SLAVE MONITOR, BINLOG MONITOR"  # the router's health checks: SHOW SLAVE STATUS
)


def server_options(*, semisync: bool = False) -> dict[str, Any]:
    """`mariadbd` flags for every node of a cluster, so that a node restarted after a
    crash comes back as it was set up (SET GLOBAL does not survive a restart)."""
    options: dict[str, Any] = {
        "slave-net-timeout": 10,  # a dead source noticed in 10 s, not 60
        # Apply a primary's group-committed transactions in parallel (still committed in
        # order): one thread fell seconds behind at 1,000 writes/s here (replica-lag).
        "slave-parallel-threads": 4,
        "slave-parallel-mode": "optimistic",
    }
    if semisync:
        options |= {
            f"rpl-semi-sync-{key.replace('_', '-')}": value for key, value in SEMISYNC.items()
        }
    return options


# Semi-sync settings every node carries, so roles can change without touching them. The
# source side is switched on on the primary alone (`source_semisync`): a replica writes
# what it applies to its own binary log (log-slave-updates), and with the source side on
# it waited the whole timeout (10 s) for acknowledgements from replicas it does not have.
# `master_wait_no_slave` stays ON (the default): with no replica connected, a commit
# still waits, up to the timeout, rather than turning asynchronous at once.
SEMISYNC = {
    "slave_enabled": "ON",
    "master_wait_point": "AFTER_SYNC",  # the client hears of a commit once a replica has it
    "master_timeout": 10_000,  # ms without an acknowledgement before it falls back to async
}


def app_url(url: str) -> str:
    """`url` as the application user: what a Router should be given."""
    return sql.with_user(url, APPLICATION.user, APPLICATION.password)


@asynccontextmanager
async def admin(url: str, *, timeout: float = 10.0) -> AsyncIterator[sql.Session]:
    """One administrative session (the URL's own user, root for sdlab's servers)."""
    session = await sql.connect(url, isolation=None, timeout=timeout)
    try:
        yield session
    finally:
        await session.close()


async def prepare(url: str, *, semisync: bool = False) -> None:
    """The users of a cluster node, and semi-sync on if asked; safe to run again."""
    async with admin(url) as s:
        await s.execute("SET SESSION sql_log_bin = 0")
        for login, grants in (
            (REPLICATION, "REPLICATION SLAVE"),
            (APPLICATION, APPLICATION_GRANTS),
        ):
            await s.execute(
                f"CREATE USER IF NOT EXISTS '{login.user}'@'%%' IDENTIFIED BY %s", (login.password,)
            )
            await s.execute(f"GRANT {grants} ON *.* TO '{login.user}'@'%'")
        await set_semisync(s, semisync)


async def set_semisync(s: sql.Session, on: bool) -> None:
    """The settings of `SEMISYNC` on (or semi-sync off) on the node of session `s`;
    the source side stays as it was (see `source_semisync`)."""
    if not on:
        await s.execute("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        await s.execute("SET GLOBAL rpl_semi_sync_slave_enabled = OFF")
        return
    for key, value in SEMISYNC.items():
        await s.execute(f"SET GLOBAL rpl_semi_sync_{key} = {value}")


async def source_semisync(url: str, on: bool) -> None:
    """Switch the source side of semi-sync on (the primary) or off (any other node).
    It does not survive a restart: a primary restarted without a failover commits
    asynchronously until this is run again (`status` shows it)."""
    async with admin(url) as s:
        await s.execute(f"SET GLOBAL rpl_semi_sync_master_enabled = {'ON' if on else 'OFF'}")


async def user_databases(url: str) -> list[str]:
    async with admin(url) as s:
        names = [row[0] for row in await s.fetch("SHOW DATABASES")]
    return [name for name in names if name not in SYSTEM_DATABASES]


def _client(program: str, url: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a MariaDB client program for `url`. The password
    goes in MYSQL_PWD, not the argv, which every user's `ps` shows."""
    parts = urlsplit(url)
    argv = [
        program,
        f"--host={parts.hostname or '127.0.0.1'}",
        f"--port={parts.port or 3306}",
        f"--user={unquote(parts.username or 'root')}",
        *args,
    ]
    env = dict(os.environ)
    env.pop("MYSQL_PWD", None)
    if parts.password:
        env["MYSQL_PWD"] = unquote(parts.password)
    return argv, env


_SNAPSHOT_POSITION = re.compile(r"SET GLOBAL gtid_slave_pos\s*=\s*'([^']*)'")


async def seed(primary: str, replica: str) -> str:
    """Copy a consistent snapshot of the primary's databases onto the replica; return
    the GTID position of that snapshot (where the replica must start replicating)."""
    async with admin(replica) as s:
        await s.execute("STOP SLAVE")
        await s.execute("RESET SLAVE ALL")
        await s.execute("RESET MASTER")  # its own binary log starts empty: GTIDs are the primary's
    databases = await user_databases(primary)
    if not databases:  # nothing to copy: the position is the whole of it
        async with admin(primary) as s:
            return str(await s.fetchval("SELECT @@gtid_binlog_pos"))
    dump, dump_env = _client(
        "mariadb-dump",
        primary,
        "--single-transaction",
        "--gtid",
        "--master-data=2",
        "--routines",
        "--events",
        "--triggers",
        "--add-drop-database",
        "--databases",
        *databases,
    )
    load, load_env = _client("mariadb", replica, "--init-command=SET SESSION sql_log_bin = 0")
    pipe = asyncio.subprocess.PIPE
    dumper = await asyncio.create_subprocess_exec(*dump, stdout=pipe, stderr=pipe, env=dump_env)
    loader = await asyncio.create_subprocess_exec(*load, stdin=pipe, stderr=pipe, env=load_env)
    assert dumper.stdout is not None
    assert loader.stdin is not None
    position, head = None, b""
    try:
        # Through this process rather than an OS pipe, to read the position on the way:
        # it is a comment in the dump's first lines.
        while chunk := await dumper.stdout.read(1 << 16):
            if position is None:
                head += chunk
                if found := _SNAPSHOT_POSITION.search(head.decode(errors="replace")):
                    position, head = found.group(1), b""
            loader.stdin.write(chunk)
            await loader.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        dumper.kill()  # the loader failed: its error is the one to report
    finally:
        loader.stdin.close()
        dump_err, load_err = await asyncio.gather(_stderr(dumper), _stderr(loader))
    if dumper.returncode or loader.returncode or position is None:
        said = (dump_err + load_err).strip() or "the dump named no GTID position"
        raise ReplicationBroken(sql.address_of(replica), f"seeding from the primary failed: {said}")
    return position


async def _stderr(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    said = await process.stderr.read()
    await process.wait()
    return said.decode(errors="replace")


async def attach(replica: str, primary: str, *, position: str | None = None) -> None:
    """Make `replica` replicate from `primary`, from `position` if given (a seeded
    replica), else from what it has applied (a replica moved to a new primary)."""
    source = urlsplit(primary)
    async with admin(replica) as s:
        await s.execute("STOP SLAVE")
        if position is not None:
            await s.execute("SET GLOBAL gtid_slave_pos = %s", (position,))
        await s.execute(
            "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s,"
            " MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
            (
                source.hostname or "127.0.0.1",
                source.port or 3306,
                REPLICATION.user,
                REPLICATION.password,
            ),
        )
        await s.execute("SET GLOBAL read_only = 1")
        await s.execute("START SLAVE")


async def verify(primary: str, replicas: Mapping[str, str], *, timeout: float = 10.0) -> None:
    """A probe row written on the primary is read back on every replica within
    `timeout`; raises ReplicationBroken naming the replica and why otherwise."""
    token = uuid.uuid4().hex
    async with admin(primary) as s:
        await s.execute(f"CREATE DATABASE IF NOT EXISTS {PROBE_DATABASE}")
        await s.execute(
            f"CREATE TABLE IF NOT EXISTS {PROBE_DATABASE}.probe"
            " (token CHAR(32) PRIMARY KEY, written_at DATETIME(6) NOT NULL)"
        )
        await s.execute(
            f"INSERT INTO {PROBE_DATABASE}.probe VALUES (%s, UTC_TIMESTAMP(6))", (token,)
        )
        gtid = str(await s.fetchval("SELECT @@last_gtid"))

    async def one(name: str, url: str) -> None:
        async with admin(url) as s:
            reached = await s.fetchval("SELECT MASTER_GTID_WAIT(%s, %s)", (gtid, timeout))
            found = await s.fetchval(
                f"SELECT COUNT(*) FROM {PROBE_DATABASE}.probe WHERE token = %s", (token,)
            )
        if reached == 0 and found == 1:
            return
        state = await observe(name, url)
        why = state.last_error or (
            f"IO thread {state.io_running or 'absent'} ({state.io_state or '-'}), "
            f"SQL thread {state.sql_running or 'absent'} ({state.sql_state or '-'})"
        )
        raise ReplicationBroken(
            name, f"the probe row {gtid} did not arrive in {timeout:g} s: {why}"
        )

    await asyncio.gather(*(one(name, url) for name, url in replicas.items()))


async def build(
    primary: str, replicas: Sequence[str] | Mapping[str, str], *, semisync: bool = False
) -> None:
    """The whole set-up: prepare every node, seed and attach each replica, verify."""
    named = dict(replicas) if isinstance(replicas, Mapping) else {url: url for url in replicas}
    await asyncio.gather(*(prepare(url, semisync=semisync) for url in [primary, *named.values()]))
    for url in named.values():  # one snapshot at a time: each is a full read of the primary
        position = await seed(primary, url)
        await attach(url, primary, position=position)
    await source_semisync(primary, semisync)
    await verify(primary, named)

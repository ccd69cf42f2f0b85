"""`sdlab kv serve` as a user runs it, and `sdlab kv experiment`."""

from __future__ import annotations

import httpx
import pytest
import redis
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.infra.pytest_plugin import Endpoints
from sdlab.kv.experiment import Throughput
from sdlab.kv.service import ServerProcess
from tests.helpers import sdlab


def test_serve_speaks_both_protocols_on_one_store(backend_url: str) -> None:
    with ServerProcess(backend_url) as server:
        client = redis.Redis(port=server.resp_port)
        client.set("shared", "from redis")
        assert httpx.get(f"{server.http_url}/keys/shared").content == b"from redis"
        httpx.put(f"{server.http_url}/keys/other", content=b"from http")
        assert client.get("other") == b"from http"
        httpx.put(f"{server.http_url}/keys/%FF", content=b"any bytes")  # uvicorn's raw path
        assert client.get(b"\xff") == b"any bytes"
        assert "group commit" in server.output()
        client.close()


def test_serve_fails_in_one_line() -> None:
    done = sdlab("kv", "serve", "--db", "mongodb://localhost/x")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: backend 'mongodb://localhost/x'")
    assert "Traceback" not in done.stderr
    done = sdlab("kv", "serve", "--db", "mysql://root@127.0.0.1:1/x", "--no-http")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "sdlab: cannot reach MariaDB at 127.0.0.1:1: connection refused (nothing listens there)"
    )
    done = sdlab("kv", "serve", "--db", "sqlite:///kv.sqlite3?table=no-dashes")
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: table name 'no-dashes': letters, digits and _ only")


def test_serve_with_a_password_and_protected_mode() -> None:
    done = sdlab("kv", "serve", "--db", "sqlite://", "--host", "0.0.0.0")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: refusing to listen on 0.0.0.0 with no password")
    secret = "pw-not-in-any-output"
    with ServerProcess("sqlite://", extra=["--requirepass", secret]) as server:
        assert redis.Redis(port=server.resp_port, password=secret).set("k", "v")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.resp_port, password="wrong").get("k")
        with pytest.raises(redis.AuthenticationError, match="HELLO must be called"):
            redis.Redis(port=server.resp_port).get("k")  # HELLO 3 first, as from Redis
        assert httpx.get(f"{server.http_url}/keys/k").status_code == 401
        bearer = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{server.http_url}/keys/k", headers=bearer).content == b"v"
        assert "password required" in server.output()
        assert secret not in server.output()


def test_the_old_option_names_still_work_with_a_warning() -> None:
    done = sdlab("kv", "serve", "--backend", "sqlite://", "--resp-port=1", "--host", "0.0.0.0")
    assert done.returncode == 1  # parsed as --db and --port: refused for the exposure
    assert done.stderr.strip().splitlines() == [
        "warning: --backend is deprecated, use --db",
        "warning: --resp-port is deprecated, use --port",
        "error: refusing to listen on 0.0.0.0 with no password: give --requirepass (or "
        "SDLAB_KV_PASSWORD), listen on 127.0.0.1, or say --insecure",
    ]


@pytest.mark.slow
async def test_the_benchmark_runs_every_server(sdlab_endpoints: Endpoints) -> None:
    endpoints = {name: sdlab_endpoints[name] for name in Throughput.services}
    experiment = Throughput(requests=600, naive_requests=300, clients=10, keyspace=100)
    outcome = await experiment.run(Bench(endpoints, Progress()))
    assert [row["server"] for row in outcome.rows] == [
        "Redis 7 (the ceiling, no fsync)",
        "Redis 7, appendfsync always",
        *(
            f"sdlab kv on {db}, {mode}"
            for db in ("SQLite", "MariaDB", "PostgreSQL")
            for mode in ("group commit", "naive")
        ),
    ]
    for row in outcome.rows:
        assert row["SET (req/s)"] > 0
        assert row["GET (req/s)"] > 0
    assert sum("as fast as one transaction per write" in note for note in outcome.notes) == 3
    assert outcome.rows[3]["durability"] == "synchronous=FULL (WAL)"
    assert outcome.rows[4]["durability"] == "innodb_flush_log_at_trx_commit=1"
    assert outcome.rows[6]["durability"] == "synchronous_commit=on"

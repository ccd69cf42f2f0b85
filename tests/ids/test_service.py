"""The HTTP service and the command line, as their users call them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdlab.ids import SNOWFLAKE
from sdlab.ids.service import Generators, create_app
from sdlab.infra.pytest_plugin import Endpoints
from tests.helpers import sdlab


@pytest.fixture
async def client(sdlab_endpoints: Endpoints, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    generators = Generators(
        tmp_path,
        mysql_url=sdlab_endpoints["mysql"].url,
        postgres_url=sdlab_endpoints["postgres"].url,
        redis_url=sdlab_endpoints["redis"].url,
    )
    app = create_app(generators)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ids") as http:
            yield http


@pytest.mark.parametrize(
    "kind", ["snowflake", "simple", "ulid", "uuid7", "central", "instagram", "ticket"]
)
async def test_every_kind_is_served_as_strings(client: httpx.AsyncClient, kind: str) -> None:
    answer = await client.post(f"/ids/{kind}", params={"count": 5})
    assert answer.status_code == 200, answer.text
    ids = answer.json()["ids"]
    assert len(ids) == 5
    assert all(isinstance(i, str) for i in ids)
    assert len(set(ids)) == 5
    if kind not in ("central", "ticket"):  # counters: nothing to decode
        decoded = await client.get(f"/decode/{ids[0]}", params={"kind": kind})
        assert decoded.json()["id"] == ids[0]


async def test_ulids_and_uuid7s_are_text_and_the_integer_on_request(
    client: httpx.AsyncClient,
) -> None:
    ulids = (await client.post("/ids/ulid", params={"count": 3})).json()["ids"]
    assert all(len(u) == 26 and u == u.upper() for u in ulids)
    assert ulids == sorted(ulids)
    uuids = (await client.post("/ids/uuid7", params={"count": 3})).json()["ids"]
    assert all(uuid.UUID(u).version == 7 and str(uuid.UUID(u)) == u for u in uuids)
    ints = (await client.post("/ids/ulid", params={"count": 3, "format": "int"})).json()["ids"]
    assert all(i.isdecimal() and int(i) >> 120 for i in ints)
    parts = (await client.get(f"/decode/{ints[0]}", params={"kind": "ulid"})).json()
    assert parts["int"] == ints[0]
    assert len(parts["id"]) == 26
    snowflakes = await client.post("/ids/snowflake", params={"count": 2, "format": "int"})
    assert all(i.isdecimal() for i in snowflakes.json()["ids"])


async def test_central_counters_are_per_service(client: httpx.AsyncClient, namespace: str) -> None:
    first = (await client.post(f"/ids/central/{namespace}", params={"count": 3})).json()
    assert first["service"] == namespace
    assert [int(i) for i in first["ids"]] == [1, 2, 3]


async def test_decode_gives_time_machine_and_sequence(client: httpx.AsyncClient) -> None:
    value = (await client.post("/ids/snowflake")).json()["ids"][0]
    parts = (await client.get(f"/decode/{value}")).json()
    assert parts["id"] == value
    assert parts["machine"] == SNOWFLAKE.decode(int(value)).node
    assert parts["time"].endswith("+00:00")


@pytest.mark.parametrize(
    ("method", "path", "params", "detail"),
    [
        ("post", "/ids/nope", {}, "Input should be"),
        ("post", "/ids/snowflake", {"count": 0}, "greater than or equal to 1"),
        ("post", "/ids/snowflake", {"count": 10**6}, "less than or equal to 100000"),
        ("post", "/ids/central/bad name!", {}, "String should match pattern"),
        ("get", "/decode/banana", {}, "is not an id: a snowflake id is written in decimal"),
        ("get", "/decode/2125551808964227073", {"kind": "ulid"}, "would date from 1970"),
        ("get", "/decode/01M8XQGYTJZJA6ZX8HK67E41B7", {}, "is ULID text"),
        ("post", "/ids/ulid", {"format": "hex"}, "Input should be 'text' or 'int'"),
        ("get", f"/decode/{1 << 70}", {}, "is not a 63-bit snowflake id"),
        ("get", "/decode/1", {"kind": "nope"}, "Input should be"),
        ("get", f"/decode/{(1 << 128) - 1}", {"kind": "simple"}, "does not decode as a simple"),
        ("get", "/decode/" + "9" * 5000, {}, "too long to be an id"),
    ],
)
async def test_bad_requests_get_422_with_a_detail(
    client: httpx.AsyncClient, method: str, path: str, params: dict[str, Any], detail: str
) -> None:
    answer = await client.request(method.upper(), path, params=params)
    assert answer.status_code == 422
    assert detail in json.dumps(answer.json()["detail"])


def test_the_command_line_makes_and_decodes() -> None:
    made = sdlab("ids", "gen", "snowflake", "--machine", "7", "-n", "5")
    assert made.returncode == 0, made.stderr
    ids = [int(line) for line in made.stdout.split()]
    assert len(ids) == 5
    assert ids == sorted(ids)
    decoded = sdlab("ids", "decode", str(ids[0]), "--json")
    assert json.loads(decoded.stdout)["machine"] == 7
    wrong = sdlab("ids", "decode", "banana")
    assert wrong.returncode == 1
    assert "is not an id" in wrong.stderr
    as_ulid = sdlab("ids", "decode", str(ids[0]), "--kind", "ulid")
    assert as_ulid.returncode == 1
    assert "would date from 1970" in as_ulid.stderr


def test_the_command_line_writes_ulids_and_uuid7s_as_text_or_integers() -> None:
    ulids = sdlab("ids", "gen", "ulid", "-n", "3").stdout.split()
    assert all(len(u) == 26 for u in ulids)
    uuids = sdlab("ids", "gen", "uuid7", "-n", "3").stdout.split()
    assert all(uuid.UUID(u).version == 7 for u in uuids)
    ints = sdlab("ids", "gen", "uuid7", "-n", "3", "--int").stdout.split()
    assert all(uuid.UUID(int=int(i)).version == 7 for i in ints)
    decoded = json.loads(sdlab("ids", "decode", ulids[0], "--kind", "ulid", "--json").stdout)
    assert decoded["id"] == ulids[0]
    decoded = json.loads(sdlab("ids", "decode", ints[0], "--kind", "uuid7", "--json").stdout)
    assert decoded["id"] == str(uuid.UUID(int=int(ints[0])))


def test_two_simple_generators_on_one_state_file_are_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    first = subprocess.Popen(
        [sys.executable, "-m", "sdlab", "ids", "gen", "simple", "--machine", "5",
         "--state-dir", str(tmp_path), "-n", "50000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert first.stdout is not None
        first.stdout.readline()  # it has the state file
        second = sdlab("ids", "gen", "simple", "--machine", "5", "--state-dir", str(tmp_path))
        assert second.returncode == 1
        assert "another generator is using" in second.stderr
    finally:
        first.kill()
        first.wait()

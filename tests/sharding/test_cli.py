"""`sdlab sharding serve` and `reshard` as a user runs them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import port_for
import pytest

from sdlab.infra import ServerProcess, sdlab_command

pytestmark = pytest.mark.slow


def test_serve_then_reshard_to_three_shards() -> None:
    port = port_for.select_random()
    command = sdlab_command("sharding", "serve", "--port", str(port), "--router", "ring")
    base = f"http://127.0.0.1:{port}"
    ready = f"{base}/shards"
    with ServerProcess(command, ready_url=ready, timeout=90, stop_signal=signal.SIGTERM) as serve:
        made = [
            httpx.post(f"{base}/users", json={"name": f"u{i}", "email": f"u{i}@x.y"}).json()
            for i in range(30)
        ]
        assert {u["shard"] for u in made} == {"shard-0", "shard-1"}
        done = subprocess.run(
            [*sdlab_command("sharding", "reshard", "--to", "3", "--service-url", base)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        )
        assert done.returncode == 0, done.stderr
        assert "ring over 3 shards (version 3)" in done.stdout
        shards = httpx.get(f"{base}/shards").json()
        assert [s["shard"] for s in shards["shards"]] == ["shard-0", "shard-1", "shard-2"]
        assert sum(s["users"] for s in shards["shards"]) == 30
        for user in made:
            assert httpx.get(f"{base}/users/{user['id']}").json()["name"] == user["name"]
        assert serve.stop() in (0, 130)  # 130: uvicorn raises the signal it handled again
    for shard in shards["shards"]:  # its shard servers stopped with it, even on SIGTERM
        host, port = shard["address"].split(":")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=1).close()

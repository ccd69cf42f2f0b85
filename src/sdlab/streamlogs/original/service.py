"""The seed's design, rebuilt as the yardstick for the benchmark: each client gets a
synchronous generator that tails the log file, polling with `time.sleep`, and Starlette
runs every `next()` of it on the thread pool (anyio's, 40 threads by default). A client
waiting for its next line holds a thread for as long as it waits.

Same files, same URL (`GET /logs/{id}`) and the same uvicorn as sdlab's service; no
ids, no end event, no resume, as in the seed. Serve it with
`sdlab streamlogs serve --seed`. The seed's poll interval is not published; 0.1 s
is our choice (a longer one only adds latency).
"""

import re
import time
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

from sdlab.streamlogs.store import ID_PATTERN, LOG

POLL = 0.1
ID = re.compile(ID_PATTERN)


def follow(path: Path, poll: float = POLL) -> Iterator[str]:
    """`tail -f` as a generator of SSE messages: runs for ever, sleeping when idle."""
    with open(path) as log:
        while True:
            line = log.readline()
            if line:
                yield f"data: {line.rstrip()}\n\n"
            else:
                time.sleep(poll)


def create_app(data_dir: Path | str, *, poll: float = POLL) -> FastAPI:
    root = Path(data_dir)
    app = FastAPI(title="the seed's log streaming (sync generator per client)")

    @app.get("/logs/{deployment_id}")
    async def logs(deployment_id: str) -> StreamingResponse:
        # An `async def` endpoint: the response starts at once, and only the generator
        # needs threads. (A plain `def` would need a thread to start, and clients would
        # wait for their headers behind the busy ones.)
        path = root / deployment_id / LOG
        if not ID.fullmatch(deployment_id) or not path.is_file():
            raise HTTPException(404, f"no deployment {deployment_id!r}")
        return StreamingResponse(follow(path, poll), media_type="text/event-stream")

    return app

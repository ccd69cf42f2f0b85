"""Log streaming over Server-Sent Events: deployments write logs to files, one reader
per deployment fans each new line out to every client, and clients resume after a
reconnect with `Last-Event-ID`, with no line lost or repeated.

    from sdlab.streamlogs import create_app, server
    server(create_app("/tmp/deployments"), port=8010).run()

`store.py` is the files, `tail.py` the shared reader and its hub, `stream.py` one
client's response, `sse.py` the wire format, `mock.py` the mock deployments,
`original.py` the seed's design, kept as the benchmark's yardstick.
"""

from sdlab.streamlogs.mock import MockRunner, Plan
from sdlab.streamlogs.service import create_app, server
from sdlab.streamlogs.store import (
    Broken,
    BrokenDeployment,
    Deployment,
    DeploymentStore,
    InvalidDeploymentId,
    Line,
    Status,
    StreamLogsError,
    UnknownDeployment,
    split_lines,
)
from sdlab.streamlogs.stream import EventStream
from sdlab.streamlogs.tail import Hub, Tail

__all__ = [
    "Broken",
    "BrokenDeployment",
    "Deployment",
    "DeploymentStore",
    "EventStream",
    "Hub",
    "InvalidDeploymentId",
    "Line",
    "MockRunner",
    "Plan",
    "Status",
    "StreamLogsError",
    "Tail",
    "UnknownDeployment",
    "create_app",
    "server",
    "split_lines",
]

"""Message brokers: every RabbitMQ tutorial pattern, and Kafka, on the real brokers.

    from sdlab.brokers import Rabbit, Queue

    async with await Rabbit.connect(url) as rabbit:
        await Queue(rabbit, "hello").send("Hello World!")   # returns once confirmed

`rabbit.py` is the connection (publisher confirms), named queues (hello, work queues)
and exchanges (fanout, direct, topic); `rpc.py` request/reply; `retry.py` dead
lettering with bounded retries and backoff; `kafka.py` topics, keyed production,
consumer groups, replay and lag; `broker.py` the one small interface (publish, consume
with ack) that runs a service on either broker by its URL. `tutorials.py` and
`kafka_demo.py` are the programs `sdlab brokers` runs, as async functions.
"""

from sdlab.brokers.broker import Broker, KafkaBroker, Message, RabbitBroker, connect
from sdlab.brokers.errors import (
    BrokerError,
    ConsumerStopped,
    InvalidName,
    InvalidUrl,
    NotConfirmed,
    RemoteError,
    RpcTimeout,
    TopologyMismatch,
    Unroutable,
)
from sdlab.brokers.kafka import (
    GroupConsumer,
    Lag,
    Producer,
    Record,
    create_topic,
    delete_topic,
    group_lag,
    replay,
)
from sdlab.brokers.rabbit import QUORUM, Exchange, Queue, Rabbit, text
from sdlab.brokers.retry import Job, RetryQueue
from sdlab.brokers.rpc import RPC_QUEUE, RpcClient, RpcServer

__all__ = [
    "QUORUM",
    "RPC_QUEUE",
    "Broker",
    "BrokerError",
    "ConsumerStopped",
    "Exchange",
    "GroupConsumer",
    "InvalidName",
    "InvalidUrl",
    "Job",
    "KafkaBroker",
    "Lag",
    "Message",
    "NotConfirmed",
    "Producer",
    "Queue",
    "Rabbit",
    "RabbitBroker",
    "Record",
    "RemoteError",
    "RetryQueue",
    "RpcClient",
    "RpcServer",
    "RpcTimeout",
    "TopologyMismatch",
    "Unroutable",
    "connect",
    "create_topic",
    "delete_topic",
    "group_lag",
    "replay",
    "text",
]

"""What can go wrong when talking to a broker, named so that callers can catch it."""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of the brokers' errors."""


class BrokerUnavailable(BrokerError):
    """No connection to the broker could be made: `service` (RabbitMQ, Kafka) at
    `address` (host:port), and the `reason`, in one line (the drivers' own errors
    name neither the address nor, for Kafka, the cause)."""

    def __init__(self, service: str, address: str, reason: str) -> None:
        super().__init__(f"{service} at {address}: {reason}")
        self.service, self.address, self.reason = service, address, reason


class TopologyMismatch(BrokerError):
    """A queue or exchange already exists with other settings than the ones asked for
    (RabbitMQ's 406 PRECONDITION_FAILED; the message quotes the broker's own words), or
    a Kafka topic with another partition count."""


class Unroutable(BrokerError):
    """The broker confirmed the message but no queue was bound to take it, or its
    exchange does not exist: it is gone. (Publishing to a pub/sub exchange with no
    subscriber is not an error: see `Exchange.publish`, which returns False instead.)"""


class NotConfirmed(BrokerError):
    """The broker refused the message (basic.nack): for example a full queue with
    `x-overflow: reject-publish`. The message was not stored."""


class ConsumerStopped(BrokerError):
    """The broker stopped delivering to a consumer that did not ask it to: the connection
    dropped, or the broker cancelled the consumer (its queue was deleted). What it held
    unacked went back to the queue; consume again (on a new connection) to go on."""


class RpcTimeout(BrokerError, TimeoutError):
    """No reply came within the timeout: no server is running, or it is too slow. The
    request expires in the queue at the same moment, so no server runs it later."""


class RemoteError(BrokerError):
    """The RPC server's handler raised; the message is the server's account of it."""


class InvalidUrl(BrokerError, ValueError):
    """A broker URL that names no broker: another scheme than the broker's (`amqp://`,
    `amqps://`, `kafka://`), no host, or a port that is not a number. Raised before any
    connection is tried."""


class InvalidName(BrokerError, ValueError):
    """A name the broker would refuse, caught before it is sent: an AMQP queue, exchange
    or routing key is at most 255 bytes of UTF-8 (the protocol's short string)."""

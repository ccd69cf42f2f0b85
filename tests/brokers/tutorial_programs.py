"""The official RabbitMQ tutorials' Python programs, as equivalents, for the interop tests.

    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ python -m tests.brokers.tutorial_programs send

Attribution: these follow the Python programs of the official RabbitMQ tutorials (the
rabbitmq/rabbitmq-tutorials repository, python/ folder; Apache License 2.0, copyright the
RabbitMQ authors), in their current form (quorum queues). They were written anew for
sdlab's tests, program by program, keeping what matters for interoperability exactly as
the tutorials have it: the client (pika, blocking), queue and exchange names and their
declarations (durable, quorum, exclusive server-named queues), message properties
(persistent delivery, reply_to, correlation_id), acks and prefetch, UTF-8 text bodies,
and what each program prints. The one change: the broker address comes from AMQP_URL
(the tutorials connect to localhost), so that the tests can use a private broker.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable

import pika


def _channel() -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    return connection, connection.channel()


def _quorum(channel: object, name: str) -> None:
    channel.queue_declare(queue=name, durable=True, arguments={"x-queue-type": "quorum"})  # type: ignore[attr-defined]


# Tutorial 1: "Hello World!" ---------------------------------------------------------


def send(args: list[str]) -> None:
    connection, channel = _channel()
    _quorum(channel, "hello")
    channel.basic_publish(exchange="", routing_key="hello", body="Hello World!")
    print(" [x] Sent 'Hello World!'", flush=True)
    connection.close()


def receive(args: list[str]) -> None:
    _, channel = _channel()
    _quorum(channel, "hello")

    def callback(ch, method, properties, body):  # type: ignore[no-untyped-def]
        print(f" [x] Received {body.decode()}", flush=True)

    channel.basic_consume(queue="hello", on_message_callback=callback, auto_ack=True)
    print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
    channel.start_consuming()


# Tutorial 2: Work queues ------------------------------------------------------------


def new_task(args: list[str]) -> None:
    connection, channel = _channel()
    _quorum(channel, "task_queue")
    message = " ".join(args) or "Hello World!"
    channel.basic_publish(
        exchange="",
        routing_key="task_queue",
        body=message,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
    )
    print(f" [x] Sent {message}", flush=True)
    connection.close()


def worker(args: list[str]) -> None:
    _, channel = _channel()
    _quorum(channel, "task_queue")
    print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)

    def callback(ch, method, properties, body):  # type: ignore[no-untyped-def]
        print(f" [x] Received {body.decode()}", flush=True)
        time.sleep(body.count(b"."))
        print(" [x] Done", flush=True)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue="task_queue", on_message_callback=callback)
    channel.start_consuming()


# Tutorials 3, 4 and 5: Publish/Subscribe, Routing, Topics ------------------------------


def emit_log(args: list[str]) -> None:
    connection, channel = _channel()
    channel.exchange_declare(exchange="logs", exchange_type="fanout")
    message = " ".join(args) or "info: Hello World!"
    channel.basic_publish(exchange="logs", routing_key="", body=message)
    print(f" [x] Sent {message}", flush=True)
    connection.close()


def receive_logs(args: list[str]) -> None:
    _, channel = _channel()
    channel.exchange_declare(exchange="logs", exchange_type="fanout")
    queue_name = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(exchange="logs", queue=queue_name)
    print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)

    def callback(ch, method, properties, body):  # type: ignore[no-untyped-def]
        print(f" [x] {body.decode()}", flush=True)

    channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)
    channel.start_consuming()


def _emit(exchange: str, kind: str, default_key: str, args: list[str]) -> None:
    connection, channel = _channel()
    channel.exchange_declare(exchange=exchange, exchange_type=kind)
    routing_key = args[0] if args else default_key
    message = " ".join(args[1:]) or "Hello World!"
    channel.basic_publish(exchange=exchange, routing_key=routing_key, body=message)
    print(f" [x] Sent {routing_key}:{message}", flush=True)
    connection.close()


def _receive(exchange: str, kind: str, binding_keys: list[str]) -> None:
    if not binding_keys:
        sys.stderr.write(f"Usage: {sys.argv[0]} [binding_key]...\n")
        sys.exit(1)
    _, channel = _channel()
    channel.exchange_declare(exchange=exchange, exchange_type=kind)
    queue_name = channel.queue_declare(queue="", exclusive=True).method.queue
    for binding_key in binding_keys:
        channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=binding_key)
    print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)

    def callback(ch, method, properties, body):  # type: ignore[no-untyped-def]
        print(f" [x] {method.routing_key}:{body.decode()}", flush=True)

    channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)
    channel.start_consuming()


def emit_log_direct(args: list[str]) -> None:
    _emit("direct_logs", "direct", "info", args)


def receive_logs_direct(args: list[str]) -> None:
    _receive("direct_logs", "direct", args)


def emit_log_topic(args: list[str]) -> None:
    # The tutorial takes the routing key only when a message follows it.
    _emit("topic_logs", "topic", "anonymous.info", args if len(args) > 1 else [])


def receive_logs_topic(args: list[str]) -> None:
    _receive("topic_logs", "topic", args)


# Tutorial 6: RPC --------------------------------------------------------------------


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def rpc_server(args: list[str]) -> None:
    _, channel = _channel()
    _quorum(channel, "rpc_queue")

    def on_request(ch, method, props, body):  # type: ignore[no-untyped-def]
        n = int(body)
        print(f" [.] fib({n})", flush=True)
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(fib(n)),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue="rpc_queue", on_message_callback=on_request)
    print(" [x] Awaiting RPC requests", flush=True)
    channel.start_consuming()


def rpc_client(args: list[str]) -> None:
    connection, channel = _channel()
    callback_queue = channel.queue_declare(queue="", exclusive=True).method.queue
    answer: dict[str, bytes] = {}
    corr_id = str(uuid.uuid4())

    def on_response(ch, method, props, body):  # type: ignore[no-untyped-def]
        if props.correlation_id == corr_id:
            answer["body"] = body

    channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
    n = int(args[0]) if args else 30
    print(f" [x] Requesting fib({n})", flush=True)
    channel.basic_publish(
        exchange="",
        routing_key="rpc_queue",
        properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id),
        body=str(n),
    )
    while "body" not in answer:
        connection.process_data_events(time_limit=None)
    print(f" [.] Got {int(answer['body'])}", flush=True)
    connection.close()


PROGRAMS: dict[str, Callable[[list[str]], None]] = {
    f.__name__: f
    for f in [
        send,
        receive,
        new_task,
        worker,
        emit_log,
        receive_logs,
        emit_log_direct,
        receive_logs_direct,
        emit_log_topic,
        receive_logs_topic,
        rpc_server,
        rpc_client,
    ]
}

if __name__ == "__main__":
    PROGRAMS[sys.argv[1]](sys.argv[2:])

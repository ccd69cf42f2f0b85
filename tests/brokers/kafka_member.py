"""A consumer-group member in a process of its own, for the failure tests.

    python -m tests.brokers.kafka_member BOOTSTRAP TOPIC GROUP [--hold]

Prints `assigned P,Q` each time the group gives it partitions, and `got P OFFSET VALUE`
for each record. It acks (and so commits) every record, unless `--hold`: then it acks
none, as a consumer that dies before committing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable

from aiokafka import TopicPartition

from sdlab.brokers import GroupConsumer


class Member(GroupConsumer):
    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        print("assigned " + ",".join(str(tp.partition) for tp in sorted(assigned)), flush=True)


async def main(bootstrap: str, topic: str, group: str, hold: bool) -> None:
    async with Member(bootstrap, topic, group, session_timeout=2.0) as member:
        async for record in member:
            print(f"got {record.partition} {record.offset} {record.text}", flush=True)
            if not hold:
                member.ack(record)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4], hold="--hold" in sys.argv))

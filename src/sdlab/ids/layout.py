"""How an id packs time, a node (machine or shard) and a sequence into one integer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


class InvalidId(ValueError):
    """The value is not an id of this layout (negative, too wide, or from before its epoch)."""


@dataclass(frozen=True)
class Parts:
    """A decoded id."""

    id: int
    time: datetime
    node: int
    sequence: int

    def as_dict(self, node_label: str = "node") -> dict[str, object]:
        return {
            "id": self.id,
            "time": self.time.isoformat(timespec="milliseconds"),
            node_label: self.node,
            "sequence": self.sequence,
        }


@dataclass(frozen=True)
class Layout:
    """`time_bits` of milliseconds since `epoch_ms`, then `node_bits`, then
    `sequence_bits`, most significant first: ids sort by time."""

    name: str
    epoch_ms: int
    time_bits: int
    node_bits: int
    sequence_bits: int
    node_label: str = "machine"

    @property
    def bits(self) -> int:
        return self.time_bits + self.node_bits + self.sequence_bits

    @property
    def max_node(self) -> int:
        return (1 << self.node_bits) - 1

    @property
    def max_sequence(self) -> int:
        return (1 << self.sequence_bits) - 1

    def compose(self, ms: int, node: int, sequence: int) -> int:
        """The id for `ms` milliseconds since the epoch, `node` and `sequence`."""
        return (
            (ms << (self.node_bits + self.sequence_bits)) | (node << self.sequence_bits) | sequence
        )

    def decode(self, value: int) -> Parts:
        """Split an id into its time (UTC), node and sequence."""
        if value < 0 or value >> self.bits:
            raise InvalidId(f"{value} is not a {self.bits}-bit {self.name} id")
        sequence = value & self.max_sequence
        node = (value >> self.sequence_bits) & self.max_node
        ms = (value >> (self.node_bits + self.sequence_bits)) + self.epoch_ms
        return Parts(value, datetime.fromtimestamp(ms / 1000, UTC), node, sequence)


# Twitter's epoch (2010-11-04T01:42:54.657Z): 41 bits of ms last until 2080.
SNOWFLAKE = Layout("snowflake", 1288834974657, 41, 10, 12)
# Instagram's: ms since 2011-01-01, a 13-bit logical shard, a 10-bit sequence.
INSTAGRAM = Layout("instagram", 1293840000000, 41, 13, 10, node_label="shard")

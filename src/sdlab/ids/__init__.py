"""Distributed id generation: Snowflake, Instagram, Flickr ticket servers, a central
counter service, the seed's simple generator, and ULID / UUIDv7 for comparison.

    from sdlab.ids import Snowflake
    ids = Snowflake(machine=7)
    ids.next_id(), ids.decode(ids.next_id())

`layout.py` is the bit layout shared by the time-ordered kinds; one module per kind;
`kinds.py` the registry of kinds that `sdlab ids` and the HTTP service read, and
`generators.py` what makes each kind's ids on first use.
"""

from sdlab.ids.central import BatchClient, CounterTable
from sdlab.ids.instagram import install as install_instagram
from sdlab.ids.layout import INSTAGRAM, SNOWFLAKE, InvalidId, Layout, Parts
from sdlab.ids.lease import MachineLease, NoMachineId
from sdlab.ids.simple import SIMPLE, SimpleGenerator
from sdlab.ids.snowflake import ClockMovedBackwards, Snowflake
from sdlab.ids.tickets import NoTicketServer, TicketServers

__all__ = [
    "INSTAGRAM",
    "SIMPLE",
    "SNOWFLAKE",
    "BatchClient",
    "ClockMovedBackwards",
    "CounterTable",
    "InvalidId",
    "Layout",
    "MachineLease",
    "NoMachineId",
    "NoTicketServer",
    "Parts",
    "SimpleGenerator",
    "Snowflake",
    "TicketServers",
    "install_instagram",
]

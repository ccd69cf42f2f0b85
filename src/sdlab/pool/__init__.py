"""A production-grade asyncio connection pool, for any driver.

    from sdlab.pool import MariaDB, Pool

    async with Pool(MariaDB("mysql://root@127.0.0.1:3306/"), min_size=2, max_size=10) as pool:
        async with pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")

See `pool.py` for how it works, `connectors.py` for the drivers it knows, `errors.py`
for what it raises and `stats.py` for what it counts.
"""

from sdlab.pool.connectors import Connector, Factory, MariaDB, PostgreSQL
from sdlab.pool.errors import PoolClosed, PoolError, PoolTimeout, TooManyRequests
from sdlab.pool.pool import Pool

__all__ = [
    "Connector",
    "Factory",
    "MariaDB",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "PostgreSQL",
    "TooManyRequests",
]

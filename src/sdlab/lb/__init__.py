"""A TCP (layer 4) load balancer on asyncio and uvloop: seven strategies, active and
passive health checks, slow start, draining, the PROXY protocol, a runtime admin API.

    from sdlab.lb import Balancer, load_config

    config = load_config(overrides={"listen": {"port": 9090, "strategy": "maglev"},
                                    "backend": [{"address": "127.0.0.1:8081"}]})
    async with Balancer(config) as balancer:
        ...

`strategies.py` holds the seven ways to pick a backend and what each promises when the
backend set changes; `backends.py` the pool (each backend's state, counters, weight);
`proxy.py` the proxy; `proxy_protocol.py` the PROXY header; `health.py` the checks;
`config.py` the TOML file and flags; `balancer.py` puts them together; `demo.py` is the
seed's slow demo backend; `service.py` the admin API.
"""

from sdlab.lb.backends import Address, Backend, LBError, Pool, State, UnknownBackend
from sdlab.lb.balancer import Balancer
from sdlab.lb.config import Config, ConfigError
from sdlab.lb.config import load as load_config
from sdlab.lb.health import Check, HealthChecker
from sdlab.lb.proxy import Proxy
from sdlab.lb.strategies import STRATEGIES, Strategy, make

__all__ = [
    "STRATEGIES",
    "Address",
    "Backend",
    "Balancer",
    "Check",
    "Config",
    "ConfigError",
    "HealthChecker",
    "LBError",
    "Pool",
    "Proxy",
    "State",
    "Strategy",
    "UnknownBackend",
    "load_config",
    "make",
]

"""The admin API of a running load balancer: HTTP on its own port (127.0.0.1 by default).

    GET    /                                the listener: strategy, its promise, counters
    GET    /backends                        every backend: state, reason, weight, counters
    POST   /backends        {"address": "127.0.0.1:8085", "weight": 1}     201: added, up
    DELETE /backends/{address}              removed now; its open connections run on
    POST   /backends/{address}/drain        no new connections; the open ones finish
    POST   /backends/{address}/ready        back from draining
    PUT    /backends/{address}/weight  {"weight": 3}
    GET    /metrics                         Prometheus text format

Errors are JSON with a `detail`: 404 for an unknown backend, 409 for one already there,
422 for a bad address or weight. (No `from __future__ import annotations` here: FastAPI
reads the annotations at run time.)
"""

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field

from sdlab.lb.backends import Address, LBError, State, UnknownBackend
from sdlab.lb.balancer import Balancer


class NewBackend(BaseModel):
    address: str = Field(examples=["127.0.0.1:8085"])
    weight: int = Field(1, ge=1, le=1000)


class Weight(BaseModel):
    weight: int = Field(ge=1, le=1000)


def create_app(balancer: Balancer) -> FastAPI:
    """The admin API over one balancer running in the same event loop."""
    app = FastAPI(title="sdlab lb admin")
    pool = balancer.pool
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PoolCollector(balancer))

    @app.exception_handler(UnknownBackend)
    async def unknown(request: Request, exc: UnknownBackend) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(LBError)
    async def conflict(request: Request, exc: LBError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/")
    async def listener() -> dict[str, Any]:
        return balancer.status()

    @app.get("/backends")
    async def backends() -> list[dict[str, Any]]:
        return [b.as_dict() for b in pool]

    @app.post("/backends", status_code=201)
    async def add(new: NewBackend) -> dict[str, Any]:
        try:
            address = Address.parse(new.address)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)  # type: ignore[return-value]
        return pool.add(address, new.weight).as_dict()

    @app.delete("/backends/{address}")
    async def remove(address: str) -> dict[str, Any]:
        return pool.remove(address).as_dict()

    @app.post("/backends/{address}/drain")
    async def drain(address: str) -> dict[str, Any]:
        return pool.drain(address).as_dict()

    @app.post("/backends/{address}/ready")
    async def ready(address: str) -> dict[str, Any]:
        return pool.undrain(address).as_dict()

    @app.put("/backends/{address}/weight")
    async def weight(address: str, body: Weight) -> dict[str, Any]:
        return pool.set_weight(address, body.weight).as_dict()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class PoolCollector(Collector):
    """Reads the pool's counters at each scrape: the hot path keeps plain integers."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def collect(self) -> Iterator[Any]:
        proxy, pool = self.balancer.proxy, self.balancer.pool
        stats = proxy.stats
        yield GaugeMetricFamily(
            "sdlab_lb_connections", "Client connections open now.", value=proxy.active
        )
        yield GaugeMetricFamily(
            "sdlab_lb_waiting", "Clients waiting under max_connections.", len(proxy.waiting)
        )
        for name, help_text, value in (
            ("accepted", "Client connections accepted.", stats.accepted),
            ("retries", "Failed backend connects tried again elsewhere.", stats.retries),
            ("no_backend", "Clients closed unserved: no backend up.", stats.no_backend),
            ("idle_closed", "Connections cut by the idle timeout.", stats.idle_closed),
        ):
            yield CounterMetricFamily(f"sdlab_lb_{name}", help_text, value=value)

        labels = ["backend"]
        state = GaugeMetricFamily(
            "sdlab_lb_backend_state", "1 for the backend's state.", labels=[*labels, "state"]
        )
        gauges = {
            "active": GaugeMetricFamily(
                "sdlab_lb_backend_active_connections", "Connections open to it.", labels=labels
            ),
            "weight": GaugeMetricFamily(
                "sdlab_lb_backend_weight", "Effective weight (slow start).", labels=labels
            ),
        }
        counters = {
            attribute: CounterMetricFamily(f"sdlab_lb_backend_{attribute}", text, labels=labels)
            for attribute, text in (
                ("connections", "Connections proxied to it."),
                ("failed_connects", "Connects to it that failed."),
                ("bytes_in", "Bytes from clients to it."),
                ("bytes_out", "Bytes from it to clients."),
                ("checks_failed", "Health checks it failed."),
            )
        }
        for backend in pool:
            which = [backend.name]
            for each in State:
                state.add_metric([*which, each.value], 1.0 if backend.state is each else 0.0)
            gauges["active"].add_metric(which, backend.active)
            gauges["weight"].add_metric(which, backend.weight)
            for attribute, family in counters.items():
                family.add_metric(which, getattr(backend, attribute))
        yield state
        yield from gauges.values()
        yield from counters.values()

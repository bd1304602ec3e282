"""Prometheus metrics of one API process: request counts and latencies, and job/item gauges."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models_registry.tables import Model, RankingItem


class _QueueCollector:
    """Scrape-time counts of ranking items and models by status (read from the registry)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        items = GaugeMetricFamily("toporank_ranking_items", "Ranking items by status", labels=["status"])
        models = GaugeMetricFamily("toporank_models", "Registered models by status", labels=["status"])
        try:
            with self.sessions() as s:
                for status, n in s.execute(select(RankingItem.status, func.count()).group_by(RankingItem.status)):
                    items.add_metric([status], n)
                for status, n in s.execute(select(Model.status, func.count()).group_by(Model.status)):
                    models.add_metric([status], n)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB blinked
            pass
        yield items
        yield models


class Metrics:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "toporank_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "toporank_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
            registry=self.registry,
        )
        self.registry.register(_QueueCollector(sessions))  # type: ignore[arg-type]



class MetricsMiddleware:
    """ASGI middleware labelling by route template (never by raw path: ids are not labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - start)

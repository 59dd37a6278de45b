"""Prometheus metrics: every service serves ``/metrics`` on its own port."""

from __future__ import annotations

from prometheus_client import start_http_server

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
"""Callback latencies live between 1 ms and a few seconds (the answer deadline)."""


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Serve the default registry on ``port`` (0 disables) from a background thread."""
    if port:
        start_http_server(port, addr=addr)

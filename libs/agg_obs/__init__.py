"""Observability shared by every service: structured JSON logs and Prometheus metrics."""

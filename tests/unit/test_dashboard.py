"""The Grafana dashboard and the Prometheus config name only metrics and ports that exist."""

from __future__ import annotations

import json
import re

import yaml

from agg_config.paths import repo_root
from agg_config.settings import Settings

ROOT = repo_root()


def _defined_metrics() -> set[str]:
    names = set()
    for path in (ROOT / "services").rglob("*.py"):
        names |= set(re.findall(r'"(agg_[a-z_]+)"', path.read_text()))
    return names


def test_every_dashboard_metric_is_defined_by_a_service() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "casino-aggregator.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_bucket$", "", n) for e in exprs for n in re.findall(r"agg_[a-z_]+", e)}
    assert used, "the dashboard queries something"
    assert used <= _defined_metrics(), used - _defined_metrics()


def test_prometheus_scrapes_the_default_ports() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]
    }
    defaults = Settings.model_fields
    assert targets == {
        "ingress": f"127.0.0.1:{defaults['ingress_port'].default}",
        "saga": f"127.0.0.1:{defaults['saga_metrics_port'].default}",
        "wallet": f"127.0.0.1:{defaults['wallet_metrics_port'].default}",
        "projector": f"127.0.0.1:{defaults['projector_metrics_port'].default}",
        "bridge": f"127.0.0.1:{defaults['bridge_metrics_port'].default}",
        "httpwallet": f"127.0.0.1:{defaults['httpwallet_port'].default}",
    }

"""The swap logic of the tenants watcher (``agg_kafka.tenants_watch``), without a broker:
which documents are applied, kept or refused, that a refusal keeps the previous document
and its lookups, that a swap is one reference, and the per-operator task set."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from agg_config.document import TenantsDocument, new_document, tenants_sha256
from agg_config.paths import repo_root
from agg_config.tenants import Tenants, parse_tenants
from agg_kafka.tenants_watch import Applied, OperatorTasks, TenantsHolder

DEV: dict[str, Any] = yaml.safe_load(
    (repo_root() / "deploy" / "local" / "aggregator.yaml").read_text()
)
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def tenants(*disabled: str) -> Tenants:
    data = copy.deepcopy(DEV)
    for provider in data["providers"]:
        if provider["id"] in disabled:
            provider["enabled"] = False
    return parse_tenants(data)


def enabled(t: Tenants) -> frozenset[str]:
    return frozenset(p.id for p in t.providers if p.enabled)


def doc(t: Tenants, previous: TenantsDocument | None = None, actor: str = "alice") -> bytes:
    return new_document(t, previous=previous, actor=actor, reason="", now=NOW).encode()


def metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def holder(service: str, build: Any = enabled) -> TenantsHolder[frozenset[str]]:
    return TenantsHolder(service, build, tenants())


def test_starts_on_the_file_as_sequence_zero() -> None:
    h = holder("t-file")
    assert h.current.document.sequence == 0
    assert h.current.document.actor == "file"
    assert "prov-nova" in h.view
    assert metric("agg_config_version", service="t-file") == 0
    assert metric("agg_config_info", service="t-file", sha256=tenants_sha256(tenants())) == 1


def test_a_new_document_is_built_once_and_swapped_with_its_lookups() -> None:
    builds: list[Tenants] = []

    def build(t: Tenants) -> frozenset[str]:
        builds.append(t)
        return enabled(t)

    h = holder("t-swap", build)
    before = h.current
    assert h.offer(doc(tenants("prov-nova")), offset=0) == "applied"
    assert len(builds) == 2  # the file's, then the new document's
    after = h.current
    assert after is not before
    assert "prov-nova" not in after.view and after.tenants.provider("prov-nova") is not None
    assert after.view == enabled(after.tenants)  # lookups and tenants of one document
    assert "prov-nova" in before.view  # a request holding the old one keeps a whole view
    assert metric("agg_config_version", service="t-swap") == 1
    old_sha = tenants_sha256(tenants())
    assert metric("agg_config_info", service="t-swap", sha256=old_sha) is None
    assert metric("agg_config_applied_total", service="t-swap") == 1


def test_the_same_tenants_again_are_not_rebuilt() -> None:
    calls = []
    h = holder("t-same", lambda t: calls.append(t) or enabled(t))
    first = doc(tenants())
    assert h.offer(first) == "unchanged"
    assert len(calls) == 1
    # same content: the sequence and actor of the published document are taken all the same
    assert h.current.document.sequence == 1 and h.current.document.actor == "alice"
    assert metric("agg_config_version", service="t-same") == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{", "undecodable"),
        (None, "undecodable"),
        (json.dumps({"format": 7}).encode(), "unknown_format"),
    ],
)
def test_undecodable_documents_are_refused_and_the_previous_stays(
    value: bytes | None, reason: str
) -> None:
    service = f"t-bad-{reason}-{value is None}"
    h = holder(service)
    h.offer(doc(tenants("prov-orbit")))
    kept = h.current
    assert h.offer(value, offset=5) == "refused"
    assert h.current is kept
    assert metric("agg_config_refused_total", service=service, reason=reason) == 1


def test_invalid_tenants_are_refused() -> None:
    data = json.loads(doc(tenants()))
    data["tenants"]["operators"][0]["currencies"] = ["XXX"]
    h = holder("t-invalid")
    kept = h.current
    assert h.offer(json.dumps(data).encode()) == "refused"
    assert h.current is kept
    assert metric("agg_config_refused_total", service="t-invalid", reason="invalid_tenants") == 1


def test_a_document_the_service_cannot_build_is_refused() -> None:
    def build(t: Tenants) -> frozenset[str]:
        if "prov-orbit" not in enabled(t):
            raise LookupError("secret variable ORBIT is not set")
        return enabled(t)

    h = holder("t-build", build)
    kept = h.current
    assert h.offer(doc(tenants("prov-orbit"))) == "refused"
    assert h.current is kept
    assert metric("agg_config_refused_total", service="t-build", reason="build_failed") == 1
    # the next good one is applied
    assert h.offer(doc(tenants("prov-nova"))) == "applied"
    assert "prov-nova" not in h.view


def test_listeners_see_old_and_new_and_a_failing_one_does_not_undo_the_swap() -> None:
    h = holder("t-listen")
    seen: list[tuple[int, int]] = []

    def listener(old: Applied[frozenset[str]], new: Applied[frozenset[str]]) -> None:
        seen.append((old.document.sequence, new.document.sequence))

    def failing(old: Applied[frozenset[str]], new: Applied[frozenset[str]]) -> None:
        raise RuntimeError("boom")

    h.listeners += [failing, listener]
    assert h.offer(doc(tenants("prov-nova"))) == "applied"
    assert seen == [(0, 1)]
    assert h.current.document.sequence == 1
    assert metric("agg_config_refused_total", service="t-listen", reason="listener_failed") == 1


def test_documents_are_taken_in_log_order_whatever_their_sequence() -> None:
    # two applies at once may both publish sequence 2: the later in the log is the one every
    # instance ends on, since all read the same log in the same order
    h = holder("t-order")
    base = new_document(tenants(), previous=None, actor="a", reason="", now=NOW)
    one = new_document(tenants("prov-nova"), previous=base, actor="b", reason="", now=NOW)
    two = new_document(tenants("prov-orbit"), previous=base, actor="c", reason="", now=NOW)
    for value in (base.encode(), one.encode(), two.encode()):
        h.offer(value)
    assert h.current.document.actor == "c"
    assert "prov-nova" in h.view and "prov-orbit" not in h.view


# --- one task per operator ---------------------------------------------------------------------


def test_operator_tasks_follow_the_wanted_set() -> None:
    events: list[str] = []

    async def run(key: str, spec: int, stop: asyncio.Event) -> None:
        events.append(f"start {key}:{spec}")
        await stop.wait()
        events.append(f"stop {key}:{spec}")

    async def scenario() -> None:
        async with asyncio.TaskGroup() as group:
            tasks: OperatorTasks[str, int] = OperatorTasks(group, run)
            assert tasks.reconcile({"a": 1, "b": 1}) == (["a", "b"], [])
            await asyncio.sleep(0)
            assert tasks.reconcile({"a": 1, "b": 1}) == ([], [])
            assert tasks.reconcile({"a": 2, "c": 1}) == (["a", "c"], ["a", "b"])
            for _ in range(5):
                await asyncio.sleep(0)
            assert sorted(tasks.running) == ["a", "c"]
            tasks.stop_all()

    asyncio.run(scenario())
    assert sorted(events) == sorted([
        "start a:1", "start b:1", "stop a:1", "stop b:1", "start a:2", "start c:1",
        "stop a:2", "stop c:1",
    ])  # fmt: skip
    # a key's new task started only after its old one had finished
    assert events.index("stop a:1") < events.index("start a:2")


def test_a_key_stopped_and_wanted_again_waits_for_its_draining_task() -> None:
    events: list[str] = []
    drained = asyncio.Event()

    async def run(key: str, spec: int, stop: asyncio.Event) -> None:
        events.append(f"start {spec}")
        await stop.wait()
        if spec == 1:
            await drained.wait()  # the first loop takes its time to finish its batch
        events.append(f"stop {spec}")

    async def scenario() -> None:
        async with asyncio.TaskGroup() as group:
            tasks: OperatorTasks[str, int] = OperatorTasks(group, run)
            tasks.reconcile({"a": 1})
            await asyncio.sleep(0)
            tasks.reconcile({})
            tasks.reconcile({"a": 2})
            for _ in range(5):
                await asyncio.sleep(0)
            assert events == ["start 1"]  # the second waits
            drained.set()
            for _ in range(5):
                await asyncio.sleep(0)
            assert events == ["start 1", "stop 1", "start 2"]
            tasks.stop_all()

    asyncio.run(scenario())
    assert events[-1] == "stop 2"

"""The published tenants document (``agg_config.document``): its encoding, its digest, the
summary of what a change changes (the journal's ``TenantsChanged``, never a secret), the
check that refuses a document whose secrets are missing, and its redacted form."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from agg_avro import AvroCodec
from agg_config.document import (
    ChangeSummary,
    DocumentError,
    KindChange,
    decode_document,
    new_document,
    secret_problems,
    summarize_change,
    tenants_json,
    tenants_sha256,
)
from agg_config.paths import repo_root
from agg_config.redact import MASK, redact_tenants
from agg_config.tenants import Tenants, parse_tenants
from agg_kafka.config_topic import TENANTS_CHANGED, Published, tenants_changed

DEV: dict[str, Any] = yaml.safe_load(
    (repo_root() / "deploy" / "local" / "aggregator.yaml").read_text()
)
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def dev(change: Any = None) -> Tenants:
    data = copy.deepcopy(DEV)
    if change is not None:
        change(data)
    return parse_tenants(data)


def _item(kind: str, item_id: str) -> Any:
    return lambda data: next(i for i in data[kind] if i["id"] == item_id)


def disable(provider_id: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        _item("providers", provider_id)(data)["enabled"] = False

    return change


# --- encoding and digest --------------------------------------------------------------------


def test_a_document_reads_back_equal() -> None:
    doc = new_document(dev(), previous=None, actor="alice", reason="first", now=NOW)
    back = decode_document(doc.encode())
    assert back == doc
    assert (back.sequence, back.previous_sha256, back.actor) == (1, None, "alice")


def test_the_next_document_counts_on_and_names_its_previous() -> None:
    first = new_document(dev(), previous=None, actor="alice", reason="", now=NOW)
    second = new_document(dev(disable("prov-nova")), previous=first, actor="bob", reason="x",
                          now=NOW)  # fmt: skip
    assert second.sequence == 2
    assert second.previous_sha256 == first.sha256 != second.sha256


def test_the_digest_is_of_the_content_not_of_its_spelling() -> None:
    # defaults written out or left implicit, keys in another order: the same tenants
    spelled = copy.deepcopy(DEV)
    spelled["providers"][0]["enabled"] = True
    spelled["operators"][0] = dict(reversed(list(spelled["operators"][0].items())))
    assert tenants_sha256(parse_tenants(spelled)) == tenants_sha256(dev())
    assert tenants_sha256(dev(disable("prov-nova"))) != tenants_sha256(dev())


def test_tenants_json_parses_back_to_the_same_tenants() -> None:
    assert parse_tenants(tenants_json(dev())) == dev()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "undecodable"),
        (b"not json", "undecodable"),
        (b"[1, 2]", "undecodable"),
        (json.dumps({"format": 99}).encode(), "unknown_format"),
        (json.dumps({"format": 1, "sequence": 1}).encode(), "undecodable"),
    ],
)
def test_values_that_are_no_document_are_refused(value: bytes, reason: str) -> None:
    with pytest.raises(DocumentError) as caught:
        decode_document(value)
    assert caught.value.reason == reason


def test_a_document_with_invalid_tenants_is_refused_with_their_problems() -> None:
    data = json.loads(new_document(dev(), previous=None, actor="a", reason="", now=NOW).encode())
    data["tenants"]["games"][0]["provider"] = "prov-nowhere"
    with pytest.raises(DocumentError) as caught:
        decode_document(json.dumps(data).encode())
    assert caught.value.reason == "invalid_tenants"
    assert "games[0].provider: unknown provider 'prov-nowhere'" in str(caught.value)


def test_a_document_whose_digest_does_not_match_is_refused() -> None:
    data = json.loads(new_document(dev(), previous=None, actor="a", reason="", now=NOW).encode())
    data["tenants"]["providers"][0]["name"] = "Renamed"
    with pytest.raises(DocumentError) as caught:
        decode_document(json.dumps(data).encode())
    assert caught.value.reason == "sha256_mismatch"


# --- what changed ---------------------------------------------------------------------------


def _add_game(data: dict[str, Any]) -> None:
    data["games"].append({"id": "nova-new", "provider": "prov-nova", "name": "New"})


def _drop_beta(data: dict[str, Any]) -> None:
    data["operators"] = [o for o in data["operators"] if o["id"] != "op-beta"]


def _rotate_alpha_secret(data: dict[str, Any]) -> None:
    _item("operators", "op-alpha")(data)["secret"] = {"value": "rotated-secret-op-alpha-9999"}


def _restrict(data: dict[str, Any]) -> None:
    game = data["games"][0]
    game["restricted_countries"] = [*game.get("restricted_countries", []), "FR"]


GAME0 = DEV["games"][0]["id"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (None, ChangeSummary(KindChange(), KindChange(), KindChange())),
        (disable("prov-nova"),
         ChangeSummary(KindChange(), KindChange(changed=(("prov-nova", ("enabled",)),)),
                       KindChange())),
        (_add_game, ChangeSummary(KindChange(), KindChange(), KindChange(added=("nova-new",)))),
        (_drop_beta, ChangeSummary(KindChange(removed=("op-beta",)), KindChange(), KindChange())),
        (_rotate_alpha_secret,
         ChangeSummary(KindChange(changed=(("op-alpha", ("secret",)),)), KindChange(),
                       KindChange())),
        (_restrict,
         ChangeSummary(KindChange(), KindChange(),
                       KindChange(changed=((GAME0, ("restricted_countries",)),)))),
    ],
)  # fmt: skip
def test_the_summary_names_what_changed(change: Any, expected: ChangeSummary) -> None:
    summary = summarize_change(dev(), dev(change))
    assert summary == expected
    assert summary.empty is (change is None)


def test_the_first_document_adds_everything() -> None:
    summary = summarize_change(None, dev())
    assert summary.operators.added == tuple(sorted(o["id"] for o in DEV["operators"]))
    assert "op-delta" in summary.operators.added  # the transfer-wallet operator too
    assert set(summary.providers.added) == {p["id"] for p in DEV["providers"]}
    assert len(summary.games.added) == len(DEV["games"])
    assert not (summary.operators.removed or summary.operators.changed)


def test_the_journal_event_never_holds_a_secret() -> None:
    before, after = dev(), dev(_rotate_alpha_secret)
    previous = new_document(before, previous=None, actor="alice", reason="", now=NOW)
    doc = new_document(after, previous=previous, actor="bob", reason="rotate", now=NOW)
    published = Published(doc, previous, summarize_change(before, after), "cfg-1")
    datum = tenants_changed(published)
    encoded = AvroCodec().encode(TENANTS_CHANGED, datum)
    decoded = AvroCodec().decode(encoded).datum
    assert decoded["operators"]["changed"] == [{"id": "op-alpha", "fields": ["secret"]}]
    assert (decoded["actor"], decoded["reason"], decoded["sequence"]) == ("bob", "rotate", 2)
    assert decoded["previous_sha256"] == previous.sha256
    text = json.dumps(decoded, default=str)
    for secret in ("rotated-secret-op-alpha-9999", "dev-secret-op-alpha-0001", "PRIVATE KEY"):
        assert secret not in text


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_named_by_an_unset_variable_are_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    def by_env(data: dict[str, Any]) -> None:
        _item("operators", "op-beta")(data)["secret"] = {"env": "AGG_TEST_BETA_SECRET"}
        _item("providers", "prov-nova")(data)["secret"] = {"env": "AGG_TEST_NOVA_SECRET"}

    monkeypatch.delenv("AGG_TEST_BETA_SECRET", raising=False)
    monkeypatch.setenv("AGG_TEST_NOVA_SECRET", "nova-secret-from-the-environment")
    assert secret_problems(dev(by_env)) == [
        "operators[1].secret: secret variable AGG_TEST_BETA_SECRET is not set"
    ]
    assert secret_problems(dev()) == []


def test_the_redacted_tenants_mask_every_inline_secret() -> None:
    shown = redact_tenants(tenants_json(dev()))
    text = json.dumps(shown)
    assert "dev-secret" not in text and "PRIVATE KEY" not in text
    alpha = next(o for o in shown["operators"] if o["id"] == "op-alpha")
    assert alpha["secret"] == {"value": MASK}
    # what is not a secret stays readable: ids, public keys, variable names
    hub = next(p for p in shown["providers"] if p["id"] == "prov-hub")
    assert "BEGIN PUBLIC KEY" in hub["public_key"]
    assert redact_tenants({"secret": {"env": "NAME"}}) == {"secret": {"env": "NAME"}}

"""The published tenants document: what ``aggregator config apply`` writes to the compacted
config topic (``<prefix>.config``, key ``tenants``) and what every service follows.

Pure: no Kafka. A document is the validated tenants (:func:`~agg_config.tenants.parse_tenants`)
as plain JSON, with who published it, when, why, a sequence number and the sha256 of the
tenants' canonical JSON (sorted keys, no spaces), so that two instances can tell in one
comparison whether they run the same tenants. The value on the topic is the document as JSON
(UTF-8): readable by any tool, and the tenants model already validates it field by field.

Secrets: the tenants JSON holds what the file holds. Inline secret values (development
files) are in it; production files name environment variables (``secret: {env: NAME}``), so
the topic holds only the names and each service reads the values from its own environment.
:func:`summarize_change` (the journal's ``TenantsChanged``) names ids and field names only,
never a value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agg_config.tenants import Secret, Tenants, TenantsError, parse_tenants

DOCUMENT_KEY = b"tenants"
"""The key of the tenants document on the config topic (compaction keeps the latest)."""
DOCUMENT_FORMAT = 1
"""Version of the document's JSON shape; a reader refuses a format it does not know."""
FILE_ACTOR = "file"
"""The actor of the document a service builds from its tenants file (nothing published)."""


def tenants_json(tenants: Tenants) -> dict[str, Any]:
    """The tenants as plain JSON values; :func:`parse_tenants` reads it back as equal."""
    data: dict[str, Any] = tenants.model_dump(mode="json", exclude_none=True)
    return data


def canonical_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tenants_sha256(tenants: Tenants) -> str:
    """Lowercase hex sha256 of the tenants' canonical JSON: equal tenants, equal digest."""
    return hashlib.sha256(canonical_bytes(tenants_json(tenants))).hexdigest()


class DocumentError(ValueError):
    """A config-topic value that is not a usable tenants document (the reason is the text)."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


@dataclass(frozen=True)
class TenantsDocument:
    sequence: int
    """1 for the first published document, then the previous one's plus 1 (0: from the file)."""
    sha256: str
    previous_sha256: str | None
    actor: str
    reason: str
    applied_at: datetime
    tenants: Tenants = field(repr=False)

    def encode(self) -> bytes:
        return canonical_bytes(
            {
                "format": DOCUMENT_FORMAT,
                "sequence": self.sequence,
                "sha256": self.sha256,
                "previous_sha256": self.previous_sha256,
                "actor": self.actor,
                "reason": self.reason,
                "applied_at": self.applied_at.isoformat(),
                "tenants": tenants_json(self.tenants),
            }
        )


def new_document(
    tenants: Tenants,
    *,
    previous: TenantsDocument | None,
    actor: str,
    reason: str,
    now: datetime,
) -> TenantsDocument:
    return TenantsDocument(
        sequence=(previous.sequence if previous else 0) + 1,
        sha256=tenants_sha256(tenants),
        previous_sha256=previous.sha256 if previous else None,
        actor=actor,
        reason=reason,
        applied_at=now,
        tenants=tenants,
    )


def file_document(tenants: Tenants, now: datetime) -> TenantsDocument:
    """The document of a service's own tenants file: what it runs while the config topic is
    empty (sequence 0, actor ``file``)."""
    return TenantsDocument(
        sequence=0,
        sha256=tenants_sha256(tenants),
        previous_sha256=None,
        actor=FILE_ACTOR,
        reason="",
        applied_at=now,
        tenants=tenants,
    )


def decode_document(value: bytes | None, source: str = "config topic") -> TenantsDocument:
    """The document in a config-topic value; DocumentError (reason ``undecodable``,
    ``unknown_format``, ``invalid_tenants`` or ``sha256_mismatch``) when it is none."""
    if not value:
        raise DocumentError("undecodable", f"{source}: empty value")
    try:
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != DOCUMENT_FORMAT:
            raise DocumentError(
                "unknown_format", f"{source}: document format {data.get('format')!r} unknown"
            )
        sequence = data["sequence"]
        if not isinstance(sequence, int) or sequence < 0:
            raise ValueError("sequence: a non-negative integer")
        sha256, actor = str(data["sha256"]), str(data["actor"])
        previous = data.get("previous_sha256")
        applied_at = datetime.fromisoformat(str(data["applied_at"]))
        reason = str(data.get("reason") or "")
        raw_tenants = data["tenants"]
    except DocumentError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise DocumentError("undecodable", f"{source}: not a tenants document ({exc})") from None
    try:
        tenants = parse_tenants(raw_tenants, f"{source} sequence {sequence}")
    except TenantsError as exc:
        raise DocumentError("invalid_tenants", str(exc)) from None
    digest = tenants_sha256(tenants)
    if digest != sha256:
        raise DocumentError(
            "sha256_mismatch", f"{source} sequence {sequence}: sha256 {sha256} but content {digest}"
        )
    return TenantsDocument(
        sequence=sequence,
        sha256=sha256,
        previous_sha256=str(previous) if previous else None,
        actor=actor,
        reason=reason,
        applied_at=applied_at,
        tenants=tenants,
    )


def secret_problems(tenants: Tenants) -> list[str]:
    """Secrets given by environment variable that are not set here: ``config apply`` refuses
    to publish a document whose services could not read their secrets."""
    problems: list[str] = []

    def check(path: str, secret: Secret | None) -> None:
        if secret is None:
            return
        try:
            secret.reveal()
        except LookupError as exc:
            problems.append(f"{path}: {exc}")

    for i, op in enumerate(tenants.operators):
        check(f"operators[{i}].secret", op.secret)
        check(f"operators[{i}].wallet.secret", op.wallet.secret)
        check(f"operators[{i}].wallet.signing_key", op.wallet.signing_key)
    for i, pv in enumerate(tenants.providers):
        check(f"providers[{i}].secret", pv.secret)
        check(f"providers[{i}].signing_key", pv.signing_key)
    return problems


# --- what changed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KindChange:
    """Ids added, removed and changed in one list (operators, providers or games); a changed
    id carries the names of its changed top-level fields, never their values."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def as_avro(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [{"id": i, "fields": list(f)} for i, f in self.changed],
        }

    def lines(self, kind: str) -> list[str]:
        out = [f"{kind} added: {i}" for i in self.added]
        out += [f"{kind} removed: {i}" for i in self.removed]
        out += [f"{kind} changed: {i} ({', '.join(f)})" for i, f in self.changed]
        return out


@dataclass(frozen=True)
class ChangeSummary:
    operators: KindChange
    providers: KindChange
    games: KindChange

    @property
    def empty(self) -> bool:
        return self.operators.empty and self.providers.empty and self.games.empty

    def lines(self) -> list[str]:
        return [
            *self.operators.lines("operator"),
            *self.providers.lines("provider"),
            *self.games.lines("game"),
        ]


def _kind_change(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> KindChange:
    old = {item["id"]: item for item in before}
    new = {item["id"]: item for item in after}
    changed = []
    for item_id in sorted(old.keys() & new.keys()):
        fields = sorted(
            name
            for name in old[item_id].keys() | new[item_id].keys()
            if old[item_id].get(name) != new[item_id].get(name)
        )
        if fields:
            changed.append((item_id, tuple(fields)))
    return KindChange(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        changed=tuple(changed),
    )


def summarize_change(before: Tenants | None, after: Tenants) -> ChangeSummary:
    """What ``after`` changes in ``before`` (everything added when there is none before)."""
    old = tenants_json(before) if before is not None else {}
    new = tenants_json(after)
    return ChangeSummary(
        *(
            _kind_change(old.get(kind, []), new.get(kind, []))
            for kind in ("operators", "providers", "games")
        )
    )

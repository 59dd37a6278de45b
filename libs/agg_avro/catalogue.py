"""The schema catalogue: every schema in ``schemas/*.avsc`` (the current versions) plus every
frozen past version under ``schemas/history/<full name>/v<N>.avsc``.

Writers always use the current version. Readers resolve the writer's schema by the
fingerprint carried in each message, so data written by any frozen version stays readable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from agg_avro.fingerprint import canonical_form, fingerprint
from agg_config.paths import schemas_dir

_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


class CatalogueError(ValueError):
    """The schema files are inconsistent (a programmer error caught at start-up)."""


@dataclass(frozen=True)
class SchemaEntry:
    name: str
    """Full name, e.g. ``casino.agg.WalletCommand``."""
    version: int | None
    """Frozen version number, or None for a current schema not yet frozen."""
    raw: Mapping[str, Any] = field(repr=False)
    parsed: Any = field(repr=False)
    fingerprint: bytes
    canonical: str = field(repr=False)


def _entry(raw: Mapping[str, Any], version: int | None) -> SchemaEntry:
    parsed: Any = parse_schema(dict(raw))
    name: str = parsed["name"]
    return SchemaEntry(
        name=name,
        version=version,
        raw=raw,
        parsed=parsed,
        fingerprint=fingerprint(raw),
        canonical=canonical_form(raw),
    )


class SchemaCatalogue:
    def __init__(self, current: Iterable[SchemaEntry], history: Iterable[SchemaEntry] = ()):
        self._current: dict[str, SchemaEntry] = {}
        self._by_fingerprint: dict[bytes, SchemaEntry] = {}
        self._history: dict[str, list[SchemaEntry]] = {}
        for entry in history:
            self._history.setdefault(entry.name, []).append(entry)
            self._register_fingerprint(entry)
        for versions in self._history.values():
            versions.sort(key=lambda e: e.version or 0)
        for entry in current:
            if entry.name in self._current:
                raise CatalogueError(f"schema {entry.name} is defined twice")
            frozen = next(
                (
                    e
                    for e in self._history.get(entry.name, [])
                    if e.fingerprint == entry.fingerprint
                ),
                None,
            )
            if frozen is not None:
                entry = frozen
            self._current[entry.name] = entry
            self._register_fingerprint(entry)

    def _register_fingerprint(self, entry: SchemaEntry) -> None:
        known = self._by_fingerprint.get(entry.fingerprint)
        if known is not None and known.canonical != entry.canonical:
            raise CatalogueError(f"fingerprint collision between {known.name} and {entry.name}")
        if known is None or (entry.version or 0) > (known.version or 0):
            self._by_fingerprint[entry.fingerprint] = entry

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaCatalogue:
        directory = directory or schemas_dir()
        current = []
        for path in sorted(directory.glob("*.avsc")):
            raw = json.loads(path.read_text())
            entry = _entry(raw, None)
            if path.stem != entry.name:
                raise CatalogueError(f"{path.name} defines {entry.name}; name the file after it")
            current.append(entry)
        history = []
        history_dir = directory / "history"
        if history_dir.is_dir():
            for name_dir in sorted(p for p in history_dir.iterdir() if p.is_dir()):
                for path in sorted(name_dir.glob("v*.avsc")):
                    match = _VERSION_FILE.match(path.name)
                    if not match:
                        raise CatalogueError(f"unexpected file {path}")
                    entry = _entry(json.loads(path.read_text()), int(match.group(1)))
                    if entry.name != name_dir.name:
                        raise CatalogueError(f"{path} defines {entry.name}")
                    history.append(entry)
        if not current:
            raise CatalogueError(f"no schemas found in {directory}")
        return cls(current, history)

    @property
    def names(self) -> list[str]:
        return sorted(self._current)

    def current(self, name: str) -> SchemaEntry:
        try:
            return self._current[name]
        except KeyError:
            raise KeyError(f"no schema named {name!r} in the catalogue") from None

    def by_fingerprint(self, fp: bytes) -> SchemaEntry | None:
        return self._by_fingerprint.get(fp)

    def versions(self, name: str) -> list[SchemaEntry]:
        """Frozen versions of ``name``, oldest first."""
        return list(self._history.get(name, []))

    def all_entries(self) -> list[SchemaEntry]:
        return sorted(self._by_fingerprint.values(), key=lambda e: (e.name, e.version or 0))


@lru_cache(maxsize=1)
def default_catalogue() -> SchemaCatalogue:
    return SchemaCatalogue.load()

"""``aggregator schemas``: list the schemas, check the contract, freeze new versions.

``freeze`` is the one way a schema change becomes part of the contract; ``check`` exits 1
while any schema is unfrozen or incompatible, so that a CI step can stop such a change.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agg_avro.catalogue import CatalogueError, SchemaCatalogue
from agg_avro.compat import SchemaEvolutionError, check_schemas, freeze
from agg_config.paths import repo_root, schemas_dir


def default_samples_dir() -> Path:
    """Where frozen versions' sample payloads live: next to the tests that read them."""
    return repo_root() / "tests" / "compat" / "samples"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator schemas", description="Avro schemas of the topics."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    schemas_help = "directory of the current .avsc files (default: the repository's schemas/)"
    for name, help_text in (
        ("list", "name, current version and fingerprint of every schema"),
        ("check", "fail unless every schema is frozen and compatible with its history"),
        ("freeze", "freeze every changed schema as its next version, with sample payloads"),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--schemas-dir", type=Path, default=None, help=schemas_help)
        if name == "freeze":
            command.add_argument(
                "--samples-dir",
                type=Path,
                default=None,
                help="directory of the sample payloads (default: tests/compat/samples)",
            )
    return parser


def _list(directory: Path) -> int:
    catalogue = SchemaCatalogue.load(directory)
    rows = [("schema", "version", "fingerprint")]
    for name in catalogue.names:
        entry = catalogue.current(name)
        version = f"v{entry.version}" if entry.version is not None else "unfrozen"
        rows.append((name, version, entry.fingerprint.hex()))
    name_width = max(len(row[0]) for row in rows)
    for name, version, fingerprint_hex in rows:
        print(f"{name:<{name_width}}  {version:<8}  {fingerprint_hex}")
    return 0


def _check(directory: Path) -> int:
    problems = check_schemas(directory)
    if not problems:
        print("all schemas are frozen and compatible with every frozen version")
        return 0
    print(f"{len(problems)} schema problem(s):")
    for problem in problems:
        print(f"  - {problem}")
    return 1


def _freeze(directory: Path, samples_dir: Path) -> int:
    try:
        frozen = freeze(directory, samples_dir)
    except SchemaEvolutionError as exc:
        print(exc)
        return 1
    if not frozen:
        print("nothing to freeze: every schema is frozen")
    for name in frozen:
        print(f"froze {name}")
    return 0


def main_schemas(argv: Sequence[str]) -> int:
    """Run ``aggregator schemas <argv>``; return the process exit code."""
    args = _parser().parse_args(list(argv))
    directory: Path = args.schemas_dir or schemas_dir()
    try:
        if args.command == "list":
            return _list(directory)
        if args.command == "check":
            return _check(directory)
        return _freeze(directory, args.samples_dir or default_samples_dir())
    except CatalogueError as exc:
        print(f"error: {exc}")
        return 1

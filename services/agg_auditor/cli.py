"""``aggregator audit COMMAND``: the auditor's tools over the journal.

Each command is a module with ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args, context) -> int``, registered by one entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn, TextIO

from pydantic import ValidationError

from agg_auditor import export, reconcile_report, replay_cmd, trace

if TYPE_CHECKING:
    from agg_config.settings import Settings

DESCRIPTION = """The auditor's tools over the journal.

Exit codes: 0 done, 1 failed (broker unreachable, topic missing, bad settings), 2 done but
with findings the command reports on stderr (for ``export``: undecodable records), 64 usage
error (unknown option, bad value; sysexits' EX_USAGE, so that 2 keeps one meaning).
"""

EX_USAGE = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


@dataclass
class AuditContext:
    """What every command gets besides its arguments: settings and the two streams."""

    stdout: TextIO
    stderr: TextIO
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from agg_config.settings import load_settings

            self._settings = load_settings()
        return self._settings


COMMANDS: tuple[ModuleType, ...] = (export, replay_cmd, trace, reconcile_report)
"""Commands in the order ``--help`` lists them (``replay``, ``trace``, ``reconcile`` go here)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aggregator audit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        command = commands.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main_audit(
    argv: list[str],
    *,
    settings: Settings | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one audit command; ``settings`` default to the environment's (``AGG_*``)."""
    args = build_parser().parse_args(argv)
    context = AuditContext(stdout or sys.stdout, stderr or sys.stderr, settings)
    try:
        return int(args.run(args, context))
    except ValidationError as exc:  # settings from the environment
        context.stderr.write(f"aggregator audit: error: invalid settings: {exc}\n")
        return 1
    except BrokenPipeError:
        # the reader of stdout went away (``| head``): stop quietly, like other filters
        if stdout is None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1

"""``python -m agg_auditor`` (also ``aggregator audit``): the auditor's tools."""

from __future__ import annotations

import sys

from agg_auditor.cli import main_audit

if __name__ == "__main__":
    sys.exit(main_audit(sys.argv[1:]))

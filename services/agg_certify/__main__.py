"""``python -m agg_certify operator --operator ID`` (also ``aggregator certify operator``)."""

import sys

from agg_certify.cli import main

if __name__ == "__main__":
    sys.exit(main())

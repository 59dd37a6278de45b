"""The reference operator wallet: a Kafka-native wallet with its ledger in Postgres.

It consumes ``agg.wallet.commands.<operator_id>`` (group ``agg-wallet-<operator_id>``),
applies each batch of commands in one Postgres transaction, deduplicated by command id,
answers every command on ``agg.wallet.replies.<operator_id>`` with the command's key, and
only then commits the offsets. Operators who build their own Kafka-native wallet can copy
it; ``README.md`` in this directory is the guide.

Modules, from the inside out:

- :mod:`agg_wallet.rules`: what a command does (pure; no I/O);
- :mod:`agg_wallet.store`: the Postgres schema and the one-transaction batch;
- :mod:`agg_wallet.service`: the Kafka loop per operator, test switches, metrics, logs;
- :mod:`agg_wallet.control`: HTTP ``/metrics``, ``/healthz`` and ``/mode``;
- :mod:`agg_wallet.__main__`: the command line (``python -m agg_wallet``, ``aggregator wallet``).
"""


def main(argv: list[str] | None = None) -> int:
    """Run the wallet with these command-line arguments (see ``python -m agg_wallet -h``)."""
    from agg_wallet.__main__ import main as run_main

    return run_main(argv)


__all__ = ["main"]

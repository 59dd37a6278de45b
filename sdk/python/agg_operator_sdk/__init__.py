"""Building blocks for an operator wallet that speaks the aggregator's Kafka wire contract.

The operator consumes ``agg.wallet.commands.<operator_id>`` and produces one reply per command
on ``agg.wallet.replies.<operator_id>``, with the command's key. This package gives it:

- :mod:`agg_operator_sdk.wire`: decode a command, encode a reply (Avro single-object encoding,
  the schemas shipped inside the package);
- :mod:`agg_operator_sdk.rules`: the rules a wallet must follow, as pure functions it can call
  or replace;
- :mod:`agg_operator_sdk.ledger`: dedupe by command id inside the operator's own PostgreSQL
  transaction (psycopg 3; ``pip install 'agg-operator-sdk[postgres]'``).

``README.md`` next to this package is the guide; ``examples/`` holds two runnable wallets.
"""

from agg_operator_sdk.rules import Effect, Facts, Outcome, Recorded, Rules, decide, problem_of
from agg_operator_sdk.wire import (
    CommandKind,
    DecodeError,
    EncodeError,
    ReplyStatus,
    WalletCommand,
    WalletReply,
    decode_command,
    decode_reply,
    encode_command,
    encode_reply,
    millis,
)

__version__ = "0.1.0"

__all__ = [
    "CommandKind",
    "DecodeError",
    "Effect",
    "EncodeError",
    "Facts",
    "Outcome",
    "Recorded",
    "ReplyStatus",
    "Rules",
    "WalletCommand",
    "WalletReply",
    "decide",
    "decode_command",
    "decode_reply",
    "encode_command",
    "encode_reply",
    "millis",
    "problem_of",
]

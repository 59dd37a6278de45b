"""Everything that happened to one provider transaction, in time order: the provider's
requests, the wallet commands and replies, the outcomes, the journal events, and the
projection rows, with correlation ids and the time between steps.

All of a player's topics are keyed ``operator:player`` with one partition count, so only
one partition of each is read (outcomes: the partitions the requests named), and only that
player's records of it: a provider's transaction id is its own, and the same id may belong to
other players, of the same operator or of others. The player is found in the projections;
``--operator`` and ``--player`` skip that lookup (for a transaction the projections never
saw), and are needed when several players have a transaction with that id (``--operator``
alone narrows the lookup). ``--since`` bounds how far back the topics are read. Exit 0 when
anything was found, 2 when nothing was, 64 when the transaction id is ambiguous.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2
from psycopg import sql

from agg_avro import AvroCodec, AvroDecodeError
from agg_config.settings import Settings
from agg_kafka.clients import make_consumer, player_key
from agg_kafka.topics import TopicNames
from agg_projector.migrate import SCHEMA_NAME

if TYPE_CHECKING:
    from agg_auditor.cli import AuditContext

NAME = "trace"
HELP = "every request, command, reply, outcome, event and row of one transaction, in order"


@dataclass(frozen=True)
class Step:
    at: dt.datetime
    source: str
    what: str
    correlation_id: str | None
    detail: dict[str, Any]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as Java's) gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("provider_id")
    parser.add_argument("transaction_id")
    parser.add_argument("--operator", default=None)
    parser.add_argument("--player", default=None)
    parser.add_argument("--schema", default="projection")
    parser.add_argument("--since", default=None, help="ISO-8601: read topics from this time")
    parser.add_argument("--json", action="store_true", help="one JSON object per step")


def _find_players(
    settings: Settings, schema: str, provider: str, txn: str, operator: str | None = None
) -> list[tuple[str, str]]:
    """Every (operator, player) with a transaction ``txn`` of ``provider``: one, usually."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            sql.SQL(
                "select distinct operator_id, player_id from {}.transactions"
                " where provider_id = %s and transaction_id = %s"
                " and (%s::text is null or operator_id = %s) order by 1, 2 limit 21"
            ).format(sql.Identifier(schema)),
            (provider, txn, operator, operator),
        ).fetchall()
    return [(str(op), str(player)) for op, player in rows]


def _projection_rows(
    settings: Settings, schema: str, op: str, player: str, provider: str, txn: str
) -> list[Step]:
    steps = []
    with psycopg.connect(settings.database_url) as conn:
        for status, at, corr, event_id, rule in conn.execute(
            sql.SQL(
                "select status, occurred_at, correlation_id, event_id, rule"
                " from {}.transaction_changes where operator_id = %s and player_id = %s"
                " and provider_id = %s and transaction_id = %s"
            ).format(sql.Identifier(schema)),
            (op, player, provider, txn),
        ):
            why = f" ({rule})" if rule else ""  # a rejection's rule
            steps.append(Step(at, "projection", f"transaction row -> {status}{why}", corr,
                              {"event_id": event_id}))  # fmt: skip
    return steps


async def _read(settings: Settings, tps: list[TopicPartition], since: dt.datetime | None,
                keep: Any) -> list[tuple[str, int, dict[str, Any], str]]:  # fmt: skip
    """(topic, kafka timestamp ms, datum, record name) of the records ``keep`` accepts."""
    codec = AvroCodec()
    consumer = make_consumer(settings, group_id=None, client_id="audit-trace")
    await consumer.start()
    found = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if since is None:
            await consumer.seek_to_beginning(*tps)
        else:
            offsets = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in tps}
            )
            for tp in tps:
                consumer.seek(tp, offsets[tp].offset if offsets[tp] else ends[tp])
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    try:
                        decoded = codec.decode(record.value or b"")
                    except AvroDecodeError:
                        continue
                    if keep(tp.topic, decoded.datum):
                        found.append((tp.topic, record.timestamp, decoded.datum, decoded.name))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


def trace(settings: Settings, provider: str, txn: str, op: str, player: str, schema: str,
          since: dt.datetime | None) -> list[Step]:  # fmt: skip
    names = TopicNames(settings.topic_prefix)
    key = player_key(op, player)
    p = partition_for(key, settings.partition_count)
    commands: set[str] = set()
    reply_partitions: set[int] = set()

    def owned(d: dict[str, Any]) -> bool:
        """The player's own record: the partition holds other players' too, and the
        provider's ids may be theirs as well."""
        return bool(d.get("operator_id") == op and d.get("player_id") == player)

    def keep_first(topic: str, d: dict[str, Any]) -> bool:
        if not owned(d):
            return False
        if topic == names.requests:
            ok = d["provider_id"] == provider and txn in (
                d["transaction_id"],
                d["reference_transaction_id"],
            )
            if ok and d.get("reply_partition") is not None:
                reply_partitions.add(d["reply_partition"])
            return bool(ok)
        if topic == names.wallet_commands(op):
            if d["provider_id"] == provider and d["transaction_id"] == txn:
                commands.add(d["command_id"])
                return True
            return False
        if topic == names.events:
            return bool(d.get("provider_id") == provider and txn in (
                d.get("transaction_id"), d.get("rollback_transaction_id"),
                d.get("reference_transaction_id")))  # fmt: skip
        return False

    first = asyncio.run(_read(settings, [
        TopicPartition(names.requests, p), TopicPartition(names.wallet_commands(op), p),
        TopicPartition(names.events, p)], since, keep_first))  # fmt: skip
    request_ids = {d["request_id"] for t, _, d, _ in first if t == names.requests}

    def keep_second(topic: str, d: dict[str, Any]) -> bool:
        if not owned(d):
            return False
        if topic == names.wallet_replies(op):
            return d["command_id"] in commands
        return d["provider_id"] == provider and d["request_id"] in request_ids

    second_tps = [TopicPartition(names.wallet_replies(op), p)]
    second_tps += [TopicPartition(names.outcomes, rp) for rp in sorted(reply_partitions)]
    second = asyncio.run(_read(settings, second_tps, since, keep_second))
    steps = []
    for topic, ts, d, name in first + second:
        at = dt.datetime.fromtimestamp(ts / 1000, tz=dt.UTC)
        short = name.rsplit(".", 1)[-1]
        if topic == names.requests:
            what = f"request {d['action']} ({d['request_id']}) amount {d['amount']}"
            if d.get("refusal"):  # a bet the compliance rules refused at the ingress
                what += f" refused {d['refusal']['status']} ({d['refusal']['rule']})"
        elif topic == names.outcomes:
            what = f"outcome {d['status']} balance {d['balance']}"
        elif topic == names.events:
            what = f"event {short}"
            if short == "BetRejected":
                what += f" {d['status']} ({d.get('rule') or 'no rule recorded'})"
        elif short == "WalletCommand":
            what = f"command {d['kind']} {d['amount']} {d['currency']} ({d['command_id']})"
        else:
            what = f"reply {d['status']} balance {d['balance']} ({d['command_id']})"
        steps.append(Step(at, topic, what, d.get("correlation_id"), d))
    steps += _projection_rows(settings, schema, op, player, provider, txn)
    return sorted(steps, key=lambda s: s.at)


def run(args: argparse.Namespace, context: AuditContext) -> int:
    settings = context.settings
    if not SCHEMA_NAME.match(args.schema):
        context.stderr.write(f"bad schema name {args.schema!r}\n")
        return 64
    if args.operator and args.player:
        op, player = args.operator, args.player
    else:
        found = _find_players(
            settings, args.schema, args.provider_id, args.transaction_id, args.operator
        )
        if not found:
            context.stderr.write(
                "transaction not in the projections: give --operator and --player\n"
            )
            return 2
        if len(found) > 1:
            shown = ", ".join(f"--operator {o} --player {p}" for o, p in found[:20])
            more = " ..." if len(found) > 20 else ""
            context.stderr.write(
                f"{args.provider_id} transaction {args.transaction_id} is one of several "
                f"players: give one of {shown}{more}\n"
            )
            return 64
        [(op, player)] = found
    since = dt.datetime.fromisoformat(args.since.replace("Z", "+00:00")) if args.since else None
    steps = trace(settings, args.provider_id, args.transaction_id, op, player, args.schema, since)
    out = context.stdout
    previous: dt.datetime | None = None
    for step in steps:
        gap_ms = 0.0 if previous is None else (step.at - previous).total_seconds() * 1000
        delta = "" if previous is None else f"+{gap_ms:.1f} ms"
        previous = step.at
        if args.json:
            line = {
                "at": step.at.isoformat(),
                "source": step.source,
                "what": step.what,
                "correlation_id": step.correlation_id,
                "after_previous_ms": gap_ms,
            }
            out.write(json.dumps(line, default=str) + "\n")
        else:
            out.write(f"{step.at:%H:%M:%S.%f}"[:-3] + f"  {delta:>11}  {step.source:<28} "
                      f"{step.what}  [{step.correlation_id}]\n")  # fmt: skip
    if not steps:
        context.stderr.write("nothing found for that transaction\n")
        return 2
    return 0

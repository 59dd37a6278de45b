"""What must hold after every simulated schedule (``docs/simulator.md``):

1. per player and currency, the wallet's balance equals the opening balance minus the bets
   answered OK plus the wins answered OK (a bet whose rollback was answered OK counts
   nothing), from the answers the providers got;
2. every OK answer corresponds to exactly one applied wallet effect, and no final answer is
   contradicted by the final answer to an exact duplicate or a retry;
3. every owed credit and refund is acknowledged once the wallet is healthy again;
4. the journal folds to the wallet's ledger, one event id is one event, no transaction has
   contradictory decisions, every BetRejected names its rule, and projecting the journal in
   two orders of its partitions gives the same tables; a bet refused by a compliance rule
   every time it came is neither answered OK nor debited;
5. every worker restarted after every crash and no player was parked;
6. rounds: no round is closed twice (a ``RoundClosed`` or ``RoundAutoClosed`` each, once),
   no round the journal shows open is one the saga forgot (nor one it holds closed), and no
   bet first sent after its round's close was accepted.
7. a transfer-wallet operator's players: no wallet command ever leaves for them; the balance
   the saga holds is the deposits less the withdrawals (the amounts answered) less the bets
   plus the wins answered OK (a bet rolled back OK counts nothing), and the journal folds to
   it; one transfer id is journaled once.
8. free-spin campaigns: a free spin never moves money (no wallet effect, no held balance
   moved, however it was answered); the spins played (less those given back) never exceed
   the spins granted and are what the saga's campaign says is left; no free spin is
   journaled at or after its campaign's expiry or after its cancel; a campaign's win is
   journaled once, as a BONUS win; one campaign is granted once.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from agg_avro import AvroCodec
from agg_simulator.world import Track, World, effects_by_transaction

_codec = AvroCodec()

MONEY_EVENTS = {"BetAccepted": -1, "WinCredited": 1, "BetRolledBack": 1}
ROUND_CLOSES = ("RoundClosed", "RoundAutoClosed")


def journal(world: World) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    topic = world.names.events
    out: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for p in range(world.schedule.partitions):
        records = world.broker.read(topic, p, 0, world.broker.end(topic, p))
        decoded = []
        for r in records:
            assert r.value is not None
            d = _codec.decode(r.value)
            decoded.append((d.name.rsplit(".", 1)[-1], d.datum))
        out[p] = decoded
    return out


def project(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A projector's fold, deduped by event id as the real one is: ledger rows, rounds and
    balances. Only what the order of partitions could change is kept."""
    seen: set[str] = set()
    ledger: dict[tuple[str, ...], str] = {}
    rounds: dict[tuple[str, ...], tuple[int, int, int]] = {}
    money: Counter[tuple[str, str, str]] = Counter()
    for name, d in events:
        if d["event_id"] in seen:
            continue
        seen.add(d["event_id"])
        owner = (d.get("mode", "real"), d["operator_id"], d["player_id"], d["provider_id"])
        if name in ROUND_CLOSES:
            rounds[(*owner, d["round_id"])] = (d["bet_total"], d["win_total"], d["refund_total"])
        elif "transaction_id" in d:
            ledger[(*owner, d["transaction_id"])] = name
        if (name in MONEY_EVENTS and d.get("mode", "real") == "real"
                and d.get("wallet", "seamless") == "seamless"):  # fmt: skip
            money[(d["operator_id"], d["player_id"], d["currency"])] += (
                MONEY_EVENTS[name] * d["amount"]
            )
    return {"events": len(seen), "ledger": ledger, "rounds": rounds, "money": dict(money)}


def check(world: World) -> list[str]:
    problems = list(world.failures)
    if problems:
        return problems
    schedule = world.schedule
    # 5. parked players
    for slot, worker in enumerate(world.workers):
        assert worker is not None
        for metas in worker.meta.values():
            for player_key, meta in metas.items():
                if meta.parked:
                    problems.append(f"worker {slot} parked {player_key.decode()}: {meta.parked}")
    # what the providers were told
    expected: Counter[tuple[str, str, str]] = Counter()
    rolled_back: set[tuple[str, str, str, str]] = set()
    finals: dict[tuple[object, ...], set[str]] = {}
    for track in world.tracks:
        c = track.call
        statuses = {s for s, _ in track.finals}
        finals.setdefault(c.content(), set()).update(statuses)
        if c.action == "ROLLBACK" and track.final == "OK" and c.mode == "real":
            rolled_back.add((c.operator_id, c.player_id, c.provider_id,
                             c.reference_transaction_id or ""))  # fmt: skip
    for content, statuses in finals.items():
        if len(statuses) > 1:
            problems.append(f"contradicting final answers {sorted(statuses)} to {content}")
    effects = effects_by_transaction(world)
    by_key: dict[tuple[str, str, str, str], list[Track]] = {}
    transfer = set(schedule.transfer_operators)
    for track in world.tracks:
        c = track.call
        if (c.transaction_id is not None and c.mode == "real" and c.operator_id not in transfer
                and not c.action.startswith("CAMPAIGN")):  # fmt: skip
            key = (c.operator_id, c.player_id, c.provider_id, c.transaction_id)
            by_key.setdefault(key, []).append(track)
    for key, tracks in by_key.items():
        ok = [t for t in tracks if t.final == "OK"]
        if all(t.call.action == "BET" and t.call.refusal is not None for t in tracks) and (
            ok or effects.get(key, Counter())["debited"]
        ):
            problems.append(f"bet {key}, refused by a rule every time it came, moved money")
        if len({t.call.content() for t in ok}) > 1:
            problems.append(f"two different requests answered OK for transaction {key}")
        got = effects.get(key, Counter())
        first = (ok or tracks)[0].call
        account = (first.operator_id, first.player_id, first.currency)
        answers = [t.answers for t in tracks]
        if first.action == "BET" and first.campaign_id is not None:
            if got:  # a free spin, accepted or not, moves no money
                problems.append(f"free spin {key} answered {answers}: wallet effects {dict(got)}")
        elif first.action == "BET":
            net = got["debited"] - got["refunded"]
            if key in rolled_back:
                want = 0
            else:
                want = 1 if ok else 0
                expected[account] -= (first.amount or 0) * want
            if net != want:
                problems.append(
                    f"bet {key} answered {answers} (rolled back: {key in rolled_back}): "
                    f"wallet effects {dict(got)}"
                )
        elif first.action == "WIN":
            want = 1 if ok else 0
            expected[account] += (first.amount or 0) * want
            if got["credited"] != want:
                problems.append(f"win {key} answered {answers}: wallet effects {dict(got)}")
    problems += _demo_balances(world)
    problems += _held_balances(world)
    problems += _controls(world)
    problems += _campaigns(world)
    # 1. balances from the answers
    wallet: Counter[tuple[str, str, str]] = Counter()
    for op, book in world.books.items():
        for (player, currency), balance in book.balances.items():
            wallet[(op, player, currency)] = balance - schedule.starting_balance
    for account in set(wallet) | set(expected):
        if wallet[account] != expected[account]:
            problems.append(
                f"wallet of {account} moved {wallet[account]}, "
                f"the answers allow {expected[account]}"
            )
    # 4. the journal
    parts = journal(world)
    events = [e for p in sorted(parts) for e in parts[p]]
    by_id: dict[str, dict[str, Any]] = {}
    for name, d in events:
        # the same decision seen twice (a conflicting request re-sent) is journaled again at
        # its own time: the id names one event if everything but the time agrees
        body = {k: v for k, v in d.items() if k != "occurred_at"}
        previous = by_id.setdefault(d["event_id"], {"name": name, **body})
        if previous != {"name": name, **body}:
            problems.append(f"event id {d['event_id']} names two events: {previous} and {d}")
            break
    decisions: dict[str, set[str]] = {}
    per_txn: Counter[tuple[str, ...]] = Counter()
    for d in by_id.values():
        name = d["name"]
        if d.get("command_id") and name in (
            "BetAccepted", "BetRejected", "DebitTimedOut", "DebitCancelled"
        ):  # fmt: skip
            decisions.setdefault(d["command_id"], set()).add(name)
        if name in ("BetAccepted", "WinCredited", "BetRolledBack", "FundsTransferred",
                    "FreeSpinPlayed", "FreeSpinRolledBack"):  # fmt: skip
            per_txn[(name, d.get("mode", "real"), d["operator_id"], d["player_id"],
                     d["provider_id"], d["transaction_id"])] += 1  # fmt: skip
    for d in by_id.values():
        if d["name"] == "BetRejected" and not d.get("rule"):
            problems.append(f"BetRejected {d['event_id']} names no rule")
    for command_id, names in decisions.items():
        if "BetAccepted" in names and names & {"DebitTimedOut", "DebitCancelled", "BetRejected"}:
            problems.append(f"contradictory decisions for debit {command_id}: {sorted(names)}")
    for what, count in per_txn.items():
        if count > 1:
            problems.append(f"{what[0]} journaled {count} times for {what[1:]}")
    problems += _rounds(world, parts)
    forward = project(events)
    backward = project([e for p in sorted(parts, reverse=True) for e in parts[p]])
    if forward != backward:
        problems.append("projecting the journal in two partition orders gives different tables")
    folded = Counter(forward["money"])
    for account in set(folded) | set(wallet):
        if folded[account] != wallet[account]:
            problems.append(
                f"journal folds {account} to {folded[account]}, the wallet moved {wallet[account]}"
            )
    # 3. owed money acknowledged
    for slot, worker in enumerate(world.workers):
        assert worker is not None
        for states in worker.states.values():
            for player_key, state in states.items():
                for pending in state.pending.values():
                    if pending.command.kind.value in ("CREDIT", "CANCEL"):
                        problems.append(
                            f"worker {slot}: {pending.command.kind.value} "
                            f"{pending.command.command_id} of {player_key.decode()} "
                            "never acknowledged"
                        )
    return problems


RoundKey = tuple[str, str, str, str]
"""(operator, player, provider, round)."""


def _ms(value: datetime | int) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def _rounds(world: World, parts: dict[int, list[tuple[str, dict[str, Any]]]]) -> list[str]:
    """6. Rounds, from the journal (each event id once, as the projector folds it), the
    sagas' states and what the providers were told. Counts what it saw in
    ``world.round_stats``."""
    problems: list[str] = []
    stats = world.round_stats
    seen: set[str] = set()
    opened: set[RoundKey] = set()
    closes: dict[RoundKey, list[str]] = {}
    closed_at: dict[RoundKey, int] = {}
    for p in sorted(parts):
        for name, d in parts[p]:
            if d["event_id"] in seen or d.get("mode", "real") != "real":
                continue
            seen.add(d["event_id"])
            key = (d["operator_id"], d["player_id"], d["provider_id"], d.get("round_id") or "")
            if name in ROUND_CLOSES:
                closes.setdefault(key, []).append(name)
                closed_at.setdefault(key, _ms(d["occurred_at"]))
                stats["auto-closed" if name == "RoundAutoClosed" else "closed by the provider"] += 1
            elif name in MONEY_EVENTS and key[3]:
                opened.add(key)
                if key in closes:
                    by = "an auto-close" if closes[key][0] == "RoundAutoClosed" else "a close"
                    stats[f"{name} after {by}"] += 1
            elif name == "BetRejected" and d["status"] == "ROUND_CLOSED":
                stats["bets refused ROUND_CLOSED"] += 1
    for key, names in sorted(closes.items()):
        if len(names) > 1:
            problems.append(f"round {key} closed {len(names)} times: {names}")
    states = {}
    for worker in world.workers:
        assert worker is not None
        for by_player in worker.states.values():
            for state in by_player.values():
                states[(state.operator_id, state.player_id)] = state
    for key in sorted(opened):
        owner = states.get(key[:2])
        held = owner.rounds.get(f"{key[2]}:{key[3]}") if owner is not None else None
        if held is None:
            if key not in closes:
                problems.append(f"round {key} is open in the journal; the saga forgot it")
        elif held.closed != (key in closes):
            problems.append(f"round {key}: the saga holds it closed={held.closed}, the journal "
                            f"{'closes' if key in closes else 'does not close'} it")  # fmt: skip
    # a wall-clock jump backwards can put a later send before an earlier close: allow for it
    slack_ms = sum(-f.amount_ms for f in world.schedule.faults
                   if f.kind == "clock_jump" and f.amount_ms < 0)  # fmt: skip
    first_sent: dict[tuple[str, ...], int] = {}
    for track in world.tracks:
        c = track.call
        if c.action == "BET" and c.mode == "real" and track.first_sent_wall_ms is not None:
            txn = (c.operator_id, c.player_id, c.provider_id, c.transaction_id or "")
            first_sent[txn] = min(first_sent.get(txn, track.first_sent_wall_ms),
                                  track.first_sent_wall_ms)  # fmt: skip
    for track in world.tracks:
        c = track.call
        if c.action != "BET" or c.mode != "real" or track.final != "OK":
            continue
        closed = closed_at.get((c.operator_id, c.player_id, c.provider_id, c.round_id or ""))
        sent = first_sent[(c.operator_id, c.player_id, c.provider_id, c.transaction_id or "")]
        if closed is not None and sent > closed + slack_ms:
            problems.append(f"bet {c.transaction_id} of {c.operator_id}/{c.player_id} at "
                            f"{c.provider_id}, first sent at {sent} after its round "
                            f"{c.round_id} closed at {closed}, was answered OK")  # fmt: skip
    return problems


def _held_balances(world: World) -> list[str]:
    """Transfer wallets: each player's balance held by the saga moved as the answers say
    (the world checks that no command reaches their wallet), and the journal folds to it."""
    transfer = set(world.schedule.transfer_operators)
    if not transfer:
        return []
    rolled_back = {
        (t.call.operator_id, t.call.player_id, t.call.provider_id,
         t.call.reference_transaction_id)
        for t in world.tracks
        if t.call.operator_id in transfer and t.call.action == "ROLLBACK" and t.final == "OK"
    }  # fmt: skip
    expected: Counter[tuple[str, str, str]] = Counter()
    settled: set[tuple[str | None, ...]] = set()
    for t in world.tracks:
        c = t.call
        key = (c.operator_id, c.player_id, c.provider_id, c.transaction_id, c.action)
        if c.operator_id not in transfer or t.final != "OK" or key in settled:
            continue
        settled.add(key)
        account = (c.operator_id, c.player_id, c.currency)
        if c.action == "BET" and c.campaign_id is not None:
            continue  # a free spin: nothing held moves
        if c.action == "BET" and key[:4] not in rolled_back:
            expected[account] -= c.amount or 0
        elif c.action == "WIN":
            expected[account] += c.amount or 0
        elif c.action in ("DEPOSIT", "WITHDRAW"):
            moved = t.amounts[0]
            if moved is None or (c.amount is not None and moved != c.amount):
                return [f"transfer {key} answered OK moving {moved}"]
            expected[account] += moved if c.action == "DEPOSIT" else -moved
    held: Counter[tuple[str, str, str]] = Counter()
    for worker in world.workers:
        assert worker is not None
        for states in worker.states.values():
            for state in states.values():
                for currency, balance in state.transfer_balances.items():
                    held[(state.operator_id, state.player_id, currency)] = balance
    folded: Counter[tuple[str, str, str]] = Counter()
    seen: set[str] = set()
    for events in journal(world).values():
        for name, d in events:
            if d["event_id"] in seen:
                continue
            seen.add(d["event_id"])
            account = (d["operator_id"], d["player_id"], d.get("currency", ""))
            if name == "FundsTransferred":
                folded[account] += d["amount"] if d["direction"] == "IN" else -d["amount"]
            elif name in MONEY_EVENTS and d.get("wallet") == "transfer":
                folded[account] += MONEY_EVENTS[name] * d["amount"]
    problems = []
    for account in sorted(set(held) | set(expected) | set(folded)):
        if held[account] < 0:
            problems.append(f"held balance of {account} is negative: {held[account]}")
        if held[account] != expected[account]:
            problems.append(f"held balance of {account} moved {held[account]}, the answers "
                            f"allow {expected[account]}")  # fmt: skip
        if folded[account] != held[account]:
            problems.append(f"journal folds the held balance of {account} to "
                            f"{folded[account]}, the saga holds {held[account]}")  # fmt: skip
    return problems


def _controls(world: World) -> list[str]:
    """A player given a control before anything else of theirs: no real-money stake is
    accepted while blocked or self-excluded, and none is refused by a control without the
    control's rule journaled; under a day's wager limit the stakes accepted less those
    refunded never pass it, under a loss limit the stakes less refunds and wins, under a
    deposit limit the deposits; the change is journaled once, and answered OK every time."""
    controlled = [t for t in world.tracks if t.call.controls is not None]
    if not controlled:
        return []
    problems = []
    c = controlled[0].call
    kind, limit = c.controls or ("", 0)
    for t in controlled:
        if t.finals and {s for s, _ in t.finals} != {"OK"}:
            problems.append(f"controls {c.controls} of {c.operator_id}/{c.player_id} answered "
                            f"{t.answers}")  # fmt: skip
    staked = lost = deposited = changes = 0
    rules: list[str] = []
    seen: set[str] = set()
    for events in journal(world).values():
        for name, d in events:
            if d["event_id"] in seen or (d["operator_id"], d["player_id"]) != (
                c.operator_id,
                c.player_id,
            ):
                continue
            seen.add(d["event_id"])
            if d.get("mode", "real") != "real":
                continue
            amount = d.get("amount", 0)
            if name == "PlayerControlsChanged":
                changes += 1
            elif name == "BetAccepted":
                staked, lost = staked + amount, lost + amount
            elif name == "BetRolledBack":
                staked, lost = staked - amount, lost - amount
            elif name == "WinCredited":
                lost -= amount
            elif name == "FundsTransferred" and d["direction"] == "IN":
                deposited += amount
            elif name in ("BetRejected", "TransferRejected") and str(d.get("rule")).startswith(
                "rg:"
            ):
                rules.append(str(d["rule"]))
    who = f"{c.operator_id}/{c.player_id} under {kind}:{limit}"
    if changes != 1:
        problems.append(f"{who}: PlayerControlsChanged journaled {changes} times")
    blocked = kind in ("block", "exclude")
    if blocked and staked:
        problems.append(f"{who}: stakes of {staked} accepted while blocked")
    if blocked and deposited:
        problems.append(f"{who}: deposits of {deposited} accepted while blocked")
    over = {"wager": staked, "loss": lost, "deposit": deposited}.get(kind, 0)
    if not blocked and over > limit:
        problems.append(f"{who}: {kind} of {over} above the limit")
    want = {"block": "rg:blocked", "exclude": "rg:self_excluded"}.get(
        kind, f"rg:{kind}:day:{c.currency}:{limit}"
    )
    wrong = sorted({r for r in rules if r != want})
    if wrong:
        problems.append(f"{who}: refused by rules {wrong}")
    return problems


def _campaigns(world: World) -> list[str]:
    """8. Free-spin campaigns, from the journal (in each partition's order, each event id
    once) and the sagas' states; counts what it saw in ``world.round_stats``."""
    problems: list[str] = []
    stats = world.round_stats
    granted: dict[tuple[str, str, str], dict[str, Any]] = {}
    ended: dict[tuple[str, str, str], str] = {}
    net: Counter[tuple[str, str, str]] = Counter()
    seen: set[str] = set()
    for events in journal(world).values():
        for name, d in events:
            if d["event_id"] in seen:
                continue
            seen.add(d["event_id"])
            rule = d.get("rule") or ""
            if name == "BetRejected" and rule.startswith("campaign:"):
                stats[f"free spins refused {rule}"] += 1
            cid = d.get("campaign_id")
            if cid is None:
                continue
            key = (d["operator_id"], d["player_id"], cid)
            at = _ms(d["occurred_at"])
            if name == "CampaignGranted":
                if key in granted:
                    problems.append(f"campaign {key} granted twice")
                granted[key] = d
                stats["campaigns granted"] += 1
            elif name in ("CampaignCancelled", "CampaignExpired"):
                ended[key] = name
                stats[name] += 1
            elif name == "FreeSpinPlayed":
                stats["free spins played"] += 1
                grant = granted.get(key)
                if grant is None:
                    problems.append(f"free spin {d['transaction_id']} of {key} before its grant")
                    continue
                if key in ended:
                    problems.append(f"free spin {d['transaction_id']} of {key} after "
                                    f"{ended[key]}")  # fmt: skip
                if at >= _ms(grant["expires_at"]):
                    problems.append(f"free spin {d['transaction_id']} of {key} at {at}, "
                                    f"at or after its expiry")  # fmt: skip
                net[key] += 1
                if net[key] > grant["spins"]:
                    problems.append(f"campaign {key}: {net[key]} spins played of "
                                    f"{grant['spins']}")  # fmt: skip
            elif name == "FreeSpinRolledBack":
                net[key] -= 1
                stats["free spins given back"] += 1
            elif name == "WinCredited":
                stats["campaign wins credited"] += 1
                if d.get("win_kind") != "BONUS":
                    problems.append(f"win {d['transaction_id']} of {key} credited as "
                                    f"{d.get('win_kind')}")  # fmt: skip
    for worker in world.workers:
        assert worker is not None
        for states in worker.states.values():
            for state in states.values():
                for c in state.campaigns.values():
                    key = (state.operator_id, state.player_id, c.campaign_id)
                    if not 0 <= c.spins_left <= c.spins:
                        problems.append(f"campaign {key}: {c.spins_left} spins left of {c.spins}")
                    if c.spins - c.spins_left != net[key]:
                        problems.append(f"campaign {key}: the saga has {c.spins_left} spins "
                                        f"left, the journal {c.spins - net[key]}")  # fmt: skip
    return problems


def _demo_balances(world: World) -> list[str]:
    """Demo play: each player's demo balance held by the saga moved as the demo answers say
    (it never reaches the wallet: the world checks every command it gets)."""
    rolled_back = {
        (t.call.operator_id, t.call.player_id, t.call.provider_id,
         t.call.reference_transaction_id)
        for t in world.tracks
        if t.call.mode != "real" and t.call.action == "ROLLBACK" and t.final == "OK"
    }  # fmt: skip
    expected: Counter[tuple[str, str, str]] = Counter()
    settled: set[tuple[str | None, ...]] = set()
    for t in world.tracks:
        c = t.call
        key = (c.operator_id, c.player_id, c.provider_id, c.transaction_id)
        if c.mode == "real" or t.final != "OK" or key in settled or key in rolled_back:
            continue
        settled.add(key)
        account = (c.operator_id, c.player_id, c.currency)
        if c.action == "BET":
            expected[account] -= c.amount or 0
        elif c.action == "WIN":
            expected[account] += c.amount or 0
    held: Counter[tuple[str, str, str]] = Counter()
    start = world.settings_demo_start
    for worker in world.workers:
        assert worker is not None
        for states in worker.states.values():
            for state in states.values():
                for currency, balance in state.demo_balances.items():
                    held[(state.operator_id, state.player_id, currency)] = balance - start
    return [
        f"demo balance of {account} moved {held[account]}, the demo answers allow "
        f"{expected[account]}"
        for account in sorted(set(held) | set(expected))
        if held[account] != expected[account]
    ]

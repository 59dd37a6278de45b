"""Seeded schedules for the deterministic simulator: provider callbacks and faults, as plain
values, so that a failing schedule can be printed, replayed and cut down to what fails.

A schedule mixes several operators, providers and players and provokes what real traffic
does: transaction and round ids reused across players and operators (providers' ids are only
unique per provider, live tables share rounds), exact duplicates, retries after 503,
rollbacks racing their bets or coming before them, wins before and after timeouts, and calls
that come back to a round after its provider's auto-close idle time (bets to refuse, wins to
pay; each provider's idle time is drawn per schedule). Faults:
worker crashes at every port call of the batch protocol (including a write cut in the
middle), rebalances between two workers, a silent, slow or failing wallet, wallet redelivery,
and wall-clock jumps.

About a third of the schedules add a transfer-wallet operator (``op-t``): its players' funds
are moved in and out by the operator's deposits and withdrawals (some of everything), racing
their play, which reuses the other operators' provider, transaction and round ids.

About two schedules in five grant free-spin campaigns to some players (of a seamless and of
the transfer-wallet operator): grants (repeated, or reused with other content), free spins
before and after the grant, past the spins granted, with a wrong stake, after a cancel and
after the expiry (some expire within the schedule, some by a wall-clock jump), their wins,
rollbacks that give spins back, and cancels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

CRASH_POINTS = (
    "poll",
    "send:state",
    "send:outputs",
    "produce:state",
    "torn:state",
    "produce:outputs",
    "torn:outputs",
    "commit",
    "restore",
)
FAULT_KINDS = (
    "crash",
    "crash_storm",
    "rebalance",
    "wallet_silent",
    "wallet_slow",
    "wallet_failing",
    "wallet_redeliver",
    "clock_jump",
)


@dataclass(frozen=True)
class Call:
    """One provider callback: first sent at ``at_ms``; resent after RETRY_LATER until a final
    answer; ``dup_after_ms`` sends the exact same request again that much later."""

    n: int
    at_ms: int
    operator_id: str
    player_id: str
    provider_id: str
    action: str
    currency: str
    transaction_id: str | None = None
    reference_transaction_id: str | None = None
    round_id: str | None = None
    amount: int | None = None
    round_closed: bool = False
    dup_after_ms: int | None = None
    mode: str = "real"
    """The session's mode: ``demo`` play must never reach the operator's wallet."""
    refusal: tuple[str, str] | None = None
    """For a bet: the compliance refusal (status, rule) the ingress attaches; such a bet must
    never reach the wallet. Not part of :meth:`content`: a retry of a decided bet gets its
    first answer whether or not the rules refuse it now."""
    campaign_id: str | None = None
    """For a bet: the campaign it is a free spin of (it must never reach the wallet); for a
    win: the campaign whose spin won; for CAMPAIGN_GRANT and CAMPAIGN_CANCEL: the campaign."""
    spins: int = 0
    """For CAMPAIGN_GRANT: the spins granted (``amount`` is the bet value)."""
    expires_in_ms: int = 0
    """For CAMPAIGN_GRANT: its expiry, this long after the grant is first sent (by the
    saga's clock)."""

    controls: tuple[str, int] | None = None
    """For PLAYER_CONTROLS: the control stated, ``(kind, limit)``: ``block`` (the operator's),
    ``exclude`` (a self-exclusion without end), or a day's ``wager``, ``loss`` or
    ``deposit`` limit of ``limit`` in the call's currency."""

    def content(self) -> tuple[object, ...]:
        return (self.mode, self.operator_id, self.player_id, self.provider_id, self.action,
                self.transaction_id, self.reference_transaction_id, self.round_id,
                self.amount, self.currency, self.controls, self.campaign_id, self.spins,
                self.expires_in_ms)  # fmt: skip


@dataclass(frozen=True)
class Fault:
    at_ms: int
    kind: str
    worker: int = 0
    point: str = ""
    skip: int = 0
    """For a crash: how many matching port calls pass before the one that kills."""
    duration_ms: int = 0
    amount_ms: int = 0
    """A jump or a delay in ms; for a crash storm, the chance per port call in thousandths."""


@dataclass(frozen=True)
class Schedule:
    seed: int
    partitions: int
    operators: tuple[str, ...]
    calls: tuple[Call, ...]
    faults: tuple[Fault, ...]
    starting_balance: int
    exec_seed: int
    """Seeds what the schedule leaves open (batch sizes, time steps), kept when minimising."""
    round_auto_close_ms: tuple[tuple[str, int], ...] = ()
    """Per provider, the idle time after which the saga closes its rounds (the tenants
    file's ``round_auto_close_s``); a provider not listed has the saga's default."""

    def auto_close_ms(self, provider_id: str) -> int | None:
        return dict(self.round_auto_close_ms).get(provider_id)

    transfer_operators: tuple[str, ...] = ()
    """Operators (among ``operators``) of a transfer wallet: no wallet command may reach them."""

    def without_call(self, index: int) -> Schedule:
        return replace(self, calls=self.calls[:index] + self.calls[index + 1 :])

    def without_fault(self, index: int) -> Schedule:
        return replace(self, faults=self.faults[:index] + self.faults[index + 1 :])

    def describe(self) -> str:
        head = f"schedule seed={self.seed} partitions={self.partitions} "
        head += f"operators={','.join(self.operators)} balance={self.starting_balance}"
        if self.round_auto_close_ms:
            head += " auto-close " + ",".join(f"{p}={ms}ms" for p, ms in self.round_auto_close_ms)
        if self.transfer_operators:
            head += f" transfer={','.join(self.transfer_operators)}"
        lines = [head]
        events: list[tuple[int, str]] = []
        for c in self.calls:
            parts = [f"{c.action} {c.operator_id}/{c.player_id} {c.provider_id}"]
            if c.mode != "real":
                parts.append(c.mode)
            if c.transaction_id:
                parts.append(f"txn={c.transaction_id}")
            if c.reference_transaction_id:
                parts.append(f"ref={c.reference_transaction_id}")
            if c.round_id:
                parts.append(f"round={c.round_id}{' closed' if c.round_closed else ''}")
            if c.amount is not None:
                parts.append(f"amount={c.amount}")
            if c.dup_after_ms is not None:
                parts.append(f"dup+{c.dup_after_ms}ms")
            if c.refusal is not None:
                parts.append(f"refused={c.refusal[0]}:{c.refusal[1]}")
            if c.controls is not None:
                parts.append(f"controls={c.controls[0]}:{c.controls[1]}")
            if c.campaign_id is not None:
                parts.append(f"campaign={c.campaign_id}")
            if c.action == "CAMPAIGN_GRANT":
                parts.append(f"spins={c.spins} expires+{c.expires_in_ms}ms")
            events.append((c.at_ms, " ".join(parts)))
        for f in self.faults:
            text = f"FAULT {f.kind}"
            if f.kind == "crash":
                text += f" worker={f.worker} at {f.point} (skip {f.skip})"
            elif f.duration_ms:
                text += f" for {f.duration_ms}ms"
            if f.amount_ms:
                text += f" by {f.amount_ms}ms"
            events.append((f.at_ms, text))
        lines += [f"  t={at:>6} {text}" for at, text in sorted(events)]
        return "\n".join(lines)


REFUSALS = (
    ("GAME_NOT_ALLOWED", "provider_maintenance"),
    ("GAME_NOT_ALLOWED", "game_restricted_in_country:GB"),
    ("CURRENCY_MISMATCH", "game_currency:USD"),
    ("LIMIT_EXCEEDED", "max_bet:EUR:100"),
)


def _refuse_some_bets(seed: int, calls: list[Call]) -> list[Call]:
    """About one bet in eight carries a compliance refusal, some of them on an id another
    bet of the schedule uses too (refused now, allowed then, or the other way round). Drawn
    from a generator of its own, so that the rest of every seed's schedule is what it was."""
    rng = random.Random(seed * 7_919 + 17)
    return [
        replace(c, refusal=rng.choice(REFUSALS))
        if c.action == "BET" and rng.random() < 0.125
        else c
        for c in calls
    ]


def _bet(rng: random.Random, n: int, at: int, op: str, player: str, provider: str,
         currency: str, txn_space: int, round_space: int, dup: int | None) -> Call:  # fmt: skip
    """A bet with ids drawn from the small spaces providers reuse (one in three closes its
    round)."""
    return Call(n, at, op, player, provider, "BET", currency,
                transaction_id=f"t{rng.randrange(txn_space)}",
                round_id=f"r{rng.randrange(round_space)}",
                amount=rng.choice((1, 50, 100, 250, 400, 1_000)),
                round_closed=rng.random() < 0.3, dup_after_ms=dup)  # fmt: skip


def _win(rng: random.Random, n: int, at: int, op: str, player: str, provider: str,
         currency: str, txn_space: int, round_space: int, dup: int | None) -> Call:  # fmt: skip
    """A win (possibly of 0) with ids drawn from the same spaces (one in two closes its
    round)."""
    return Call(n, at, op, player, provider, "WIN", currency,
                transaction_id=f"w{rng.randrange(txn_space)}",
                round_id=f"r{rng.randrange(round_space)}",
                amount=rng.choice((0, 10, 200, 500)),
                round_closed=rng.random() < 0.5, dup_after_ms=dup)  # fmt: skip


def generate(seed: int) -> Schedule:
    rng = random.Random(seed)
    operators = tuple(f"op-{c}" for c in "ab"[: rng.randint(1, 2)])
    providers = tuple(f"prov-{c}" for c in "xy"[: rng.randint(1, 2)])
    player_ids = tuple(f"pl-{i}" for i in range(rng.randint(2, 4)))
    currencies = ("EUR", "EUR", "USD")
    # small id spaces on purpose: providers reuse transaction and round ids
    txn_space = rng.randint(3, 8)
    round_space = rng.randint(1, 3)
    duration_ms = rng.randint(1_500, 6_000)
    calls: list[Call] = []
    bets: list[Call] = []
    n_calls = rng.randint(6, 18)
    player_currency: dict[tuple[str, str], str] = {}
    for n in range(n_calls):
        op = rng.choice(operators)
        player = rng.choice(player_ids)
        provider = rng.choice(providers)
        currency = player_currency.setdefault((op, player), rng.choice(currencies))
        at = rng.randint(0, duration_ms)
        dup = rng.choice((None, None, None, rng.randint(0, 2_500)))
        roll = rng.random()
        if roll < 0.45:
            c = _bet(rng, n, at, op, player, provider, currency, txn_space, round_space, dup)
            bets.append(c)
        elif roll < 0.75:
            c = _win(rng, n, at, op, player, provider, currency, txn_space, round_space, dup)
        elif roll < 0.92:
            if bets and rng.random() < 0.8:
                bet = rng.choice(bets)
                ref, op, player, provider, currency = (bet.transaction_id, bet.operator_id,
                    bet.player_id, bet.provider_id, bet.currency)  # fmt: skip
                if bet.mode != "real" and rng.random() < 0.8:
                    calls.append(Call(n, max(0, bet.at_ms + rng.randint(-300, 2_500)), op,
                                      player, provider, "ROLLBACK", currency,
                                      transaction_id=f"rb{rng.randrange(txn_space)}",
                                      reference_transaction_id=ref, mode=bet.mode))  # fmt: skip
                    continue
                # racing the bet: before it, with it, or after it
                at = max(0, bet.at_ms + rng.randint(-300, 2_500))
            else:
                ref = f"t{rng.randrange(txn_space)}"
            c = Call(n, at, op, player, provider, "ROLLBACK", currency,
                     transaction_id=f"rb{rng.randrange(txn_space)}",
                     reference_transaction_id=ref, round_id=f"r{rng.randrange(round_space)}",
                     dup_after_ms=dup)  # fmt: skip
        else:
            c = Call(n, at, op, player, provider, "BALANCE", currency, dup_after_ms=dup)
        if rng.random() < 0.15:
            c = replace(c, mode="demo")
        calls.append(c)
    calls = _refuse_some_bets(seed, calls)
    faults: list[Fault] = []
    kinds = [rng.choice(FAULT_KINDS[2:]) for _ in range(rng.randint(0, 4))]
    kinds += ["crash_storm"] * rng.choice((0, 0, 1, 2))
    kinds += ["crash"] * rng.choice((0, 1, 1, 2, 3))
    for kind in kinds:
        at = rng.randint(0, duration_ms + 2_000)
        if kind == "crash":
            faults.append(Fault(at, kind, worker=rng.randrange(2), point=rng.choice(CRASH_POINTS),
                                skip=rng.randint(0, 3)))  # fmt: skip
        elif kind == "crash_storm":
            # every port call of either worker may kill it for a while: crashes land inside
            # the batches that matter (a timeout, a late reply) and inside restores
            faults.append(Fault(at, kind, duration_ms=rng.randint(500, 4_000),
                                amount_ms=rng.choice((20, 50, 100, 200))))  # fmt: skip
        elif kind == "rebalance":
            faults.append(Fault(at, kind))
        elif kind in ("wallet_silent", "wallet_failing"):
            faults.append(Fault(at, kind, duration_ms=rng.randint(200, 4_000)))
        elif kind == "wallet_slow":
            faults.append(Fault(at, kind, duration_ms=rng.randint(500, 4_000),
                                amount_ms=rng.randint(800, 2_500)))  # fmt: skip
        elif kind == "wallet_redeliver":
            faults.append(Fault(at, kind, amount_ms=rng.randint(1, 6)))
        else:
            faults.append(Fault(at, kind, amount_ms=rng.choice((-2_000, 1_600, 3_000, 60_000))))
    partitions = rng.choice((1, 2, 3))
    starting_balance = rng.choice((0, 300, 100_000))
    exec_seed = rng.getrandbits(32)
    # drawn after everything above, so that a seed's calls and faults stay those it had
    # before rounds were auto-closed
    auto_close = tuple((p, rng.choice(AUTO_CLOSE_MS)) for p in providers)
    calls += _after_the_idle_time(rng, calls, dict(auto_close), txn_space)
    # the transfer wallet from a generator of its own: the rest of a seed's schedule is what
    # it was before transfer wallets existed
    xrng = random.Random(seed * 1_000_003 + 17)
    transfer: tuple[str, ...] = ()
    if xrng.random() < 0.35:
        transfer = ("op-t",)
        calls += _transfer_calls(xrng, len(calls) + 1_000, duration_ms, providers, player_ids,
                                 txn_space, round_space)  # fmt: skip
    # responsible gaming, from a generator of its own too
    calls += _controls_calls(random.Random(seed * 7_919 + 3), calls)
    # campaigns from a generator of their own too: every other draw stays what it was
    crng = random.Random(seed * 2_000_029 + 23)
    if crng.random() < 0.4:
        owners = [(op, p) for op in operators + transfer for p in player_ids]
        crng.shuffle(owners)
        for i, (op, player) in enumerate(owners[: crng.randint(1, 3)]):
            currency = player_currency.get((op, player), "EUR")
            if op in transfer:  # its players' currency is drawn by the transfer calls
                currency = next((c.currency for c in calls if c.operator_id == op
                                 and c.player_id == player), "EUR")  # fmt: skip
            calls += _campaign_calls(crng, 5_000 + 100 * i, duration_ms, op, player,
                                     currency, providers)  # fmt: skip
    return Schedule(
        seed=seed,
        partitions=partitions,
        operators=operators + transfer,
        calls=tuple(sorted(calls, key=lambda c: (c.at_ms, c.n))),
        faults=tuple(sorted(faults, key=lambda f: f.at_ms)),
        starting_balance=starting_balance,
        exec_seed=exec_seed,
        round_auto_close_ms=auto_close,
        transfer_operators=transfer,
    )


def _campaign_calls(rng: random.Random, first_n: int, duration_ms: int, op: str, player: str,
                    currency: str, providers: tuple[str, ...]) -> list[Call]:  # fmt: skip
    """One player's campaigns: a grant or two (one repeated, one id sometimes reused with
    other content), free spins racing them (some past the spins, some of the wrong stake),
    wins of the spins' rounds, rollbacks of spins, a cancel now and then."""
    calls: list[Call] = []
    n = first_n
    campaigns: list[tuple[str, str, int, int]] = []
    for k in range(rng.randint(1, 2)):
        cid = f"c{k}"
        provider = rng.choice(providers)
        bet_value = rng.choice((20, 50))
        at = rng.randint(0, duration_ms // 2)
        dup = rng.choice((None, None, rng.randint(0, 1_500)))
        spins = rng.randint(1, 3)
        expires = rng.choice((600, 1_500, 3_000, 120_000))
        calls.append(Call(n, at, op, player, provider, "CAMPAIGN_GRANT", currency,
                          transaction_id=cid, amount=bet_value, campaign_id=cid, spins=spins,
                          expires_in_ms=expires, dup_after_ms=dup))  # fmt: skip
        n += 1
        if rng.random() < 0.2:  # the id again, with other content: a conflict
            calls.append(Call(n, at + rng.randint(0, 1_000), op, player, provider,
                              "CAMPAIGN_GRANT", currency, transaction_id=cid,
                              amount=bet_value, campaign_id=cid, spins=spins + 1,
                              expires_in_ms=expires))  # fmt: skip
            n += 1
        campaigns.append((cid, provider, bet_value, at))
    spins_made: list[Call] = []
    for j in range(rng.randint(1, 6)):
        cid, provider, bet_value, granted_at = rng.choice(campaigns)
        at = max(0, granted_at + rng.randint(-300, duration_ms))
        amount = bet_value if rng.random() < 0.85 else bet_value + 1
        dup = rng.choice((None, None, None, rng.randint(0, 2_000)))
        c = Call(n, at, op, player, provider, "BET", currency, transaction_id=f"f{j}",
                 round_id=f"fr{j}", amount=amount, round_closed=rng.random() < 0.3,
                 dup_after_ms=dup, campaign_id=cid)  # fmt: skip
        calls.append(c)
        spins_made.append(c)
        n += 1
        if rng.random() < 0.5:
            calls.append(Call(n, at + rng.randint(0, 800), op, player, provider, "WIN",
                              currency, transaction_id=f"fw{j}", round_id=f"fr{j}",
                              amount=rng.choice((0, 30, 400)), round_closed=True,
                              campaign_id=cid,
                              dup_after_ms=rng.choice((None, 300))))  # fmt: skip
            n += 1
    for c in spins_made:
        if rng.random() < 0.2:
            calls.append(Call(n, c.at_ms + rng.randint(-200, 1_500), op, player, c.provider_id,
                              "ROLLBACK", currency, transaction_id=f"fb{c.transaction_id}",
                              reference_transaction_id=c.transaction_id,
                              round_id=c.round_id))  # fmt: skip
            n += 1
    for cid, _, _, granted_at in campaigns:
        if rng.random() < 0.3:
            calls.append(Call(n, granted_at + rng.randint(0, duration_ms), op, player, "",
                              "CAMPAIGN_CANCEL", "XXX", transaction_id=cid, campaign_id=cid,
                              dup_after_ms=rng.choice((None, 500))))  # fmt: skip
            n += 1
    return calls


AUTO_CLOSE_MS = (400, 1_200, 2_500, 5_000, 1_800_000)
"""Providers' idle times: below the wallet timeout (a round with a debit in flight is not
idle), around the providers' retry spans, and the tenants file's default (never reached in a
schedule but by a wall-clock jump, which the saga treats as time gone by)."""


def _after_the_idle_time(rng: random.Random, calls: list[Call], auto_close: dict[str, int],
                         txn_space: int) -> list[Call]:  # fmt: skip
    """Calls that come back to a round after its provider's idle time: a new bet (refused
    ``ROUND_CLOSED`` if the round was auto-closed), a win paid after the close (sometimes
    with the round's closing flag, as an end-round call after an auto-close sends it)."""
    rounds: dict[tuple[str, str, str, str, str], int] = {}
    for c in calls:
        if c.round_id is not None and c.mode == "real":
            key = (c.operator_id, c.player_id, c.provider_id, c.currency, c.round_id)
            rounds[key] = max(rounds.get(key, 0), c.at_ms + (c.dup_after_ms or 0))
    late: list[Call] = []
    n = len(calls)
    for key in sorted(rounds):
        idle_ms = auto_close[key[2]]
        if idle_ms > 60_000 or rng.random() < 0.4:
            continue
        op, player, provider, currency, round_id = key
        at = rounds[key] + idle_ms + rng.randint(-200, 2_500)
        dup = rng.choice((None, None, rng.randint(0, 1_500)))
        late.append(Call(n, at, op, player, provider, "BET", currency,
                         transaction_id=f"t{rng.randrange(txn_space, txn_space + 4)}",
                         round_id=round_id, amount=rng.choice((1, 50, 100)),
                         dup_after_ms=dup))  # fmt: skip
        n += 1
        if rng.random() < 0.6:
            late.append(Call(n, at + rng.randint(0, 600), op, player, provider, "WIN", currency,
                             transaction_id=f"w{rng.randrange(txn_space, txn_space + 4)}",
                             round_id=round_id, amount=rng.choice((0, 10, 200)),
                             round_closed=rng.random() < 0.5))  # fmt: skip
            n += 1
    return late


CONTROL_KINDS = ("block", "exclude", "wager", "loss", "deposit")


def _controls_calls(rng: random.Random, calls: list[Call]) -> list[Call]:
    """In about a quarter of the schedules, one player (a transfer-wallet one too) is given
    a control before anything else of theirs is sent (a call at 0 ms ordered first, so every
    bet and transfer of theirs is decided under it), sometimes sent twice: a block, a
    self-exclusion, or a day's wager, loss or (transfer wallets) deposit limit."""
    if rng.random() >= 0.25:
        return []
    owners = sorted({(c.operator_id, c.player_id, c.currency) for c in calls
                     if c.mode == "real" and c.action in ("BET", "DEPOSIT")})  # fmt: skip
    if not owners:
        return []
    op, player, currency = rng.choice(owners)
    transfer = any(c.operator_id == op and c.action == "DEPOSIT" for c in calls)
    kind = rng.choice(CONTROL_KINDS if transfer else CONTROL_KINDS[:4])
    limit = rng.choice((0, 50, 300, 1_000)) if kind in ("wager", "loss", "deposit") else 0
    dup = rng.choice((None, rng.randint(0, 2_000)))
    return [Call(-1, 0, op, player, "", "PLAYER_CONTROLS", currency, transaction_id="ch-1",
                 controls=(kind, limit), dup_after_ms=dup)]  # fmt: skip


def _transfer_calls(rng: random.Random, first_n: int, duration_ms: int,
                    providers: tuple[str, ...], player_ids: tuple[str, ...], txn_space: int,
                    round_space: int) -> list[Call]:  # fmt: skip
    """A transfer-wallet operator's traffic: per player a deposit early on, play with the
    seamless operators' ids, more deposits and withdrawals (of an amount or of everything)
    racing it, duplicates of each."""
    calls: list[Call] = []
    n = first_n
    op = "op-t"
    for player in player_ids[: rng.randint(1, len(player_ids))]:
        currency = rng.choice(("EUR", "EUR", "USD"))
        moves = [("DEPOSIT", rng.randint(0, duration_ms // 3))]
        moves += [(rng.choice(("DEPOSIT", "WITHDRAW", "WITHDRAW")), rng.randint(0, duration_ms))
                  for _ in range(rng.randint(0, 3))]  # fmt: skip
        moves.append(("WITHDRAW", duration_ms + rng.randint(0, 1_500)))
        for i, (action, at) in enumerate(moves):
            amount: int | None = rng.choice((100, 500, 2_000))
            if action == "WITHDRAW" and rng.random() < 0.5:
                amount = None  # everything the balance holds
            transfer_id = f"x{rng.randrange(len(moves) + 1)}" if rng.random() < 0.2 else f"x{i}"
            dup = rng.choice((None, None, rng.randint(0, 2_000)))
            calls.append(Call(n, at, op, player, "", action, currency,
                              transaction_id=transfer_id, amount=amount,
                              dup_after_ms=dup))  # fmt: skip
            n += 1
        bets: list[Call] = []
        for _ in range(rng.randint(2, 8)):
            provider = rng.choice(providers)
            at = rng.randint(0, duration_ms)
            dup = rng.choice((None, None, None, rng.randint(0, 2_500)))
            roll = rng.random()
            if roll < 0.5:
                c = _bet(rng, n, at, op, player, provider, currency, txn_space, round_space, dup)
                bets.append(c)
            elif roll < 0.8:
                c = _win(rng, n, at, op, player, provider, currency, txn_space, round_space, dup)
            elif roll < 0.93 and bets:
                bet = rng.choice(bets)
                c = Call(n, max(0, bet.at_ms + rng.randint(-300, 2_500)), op, player,
                         bet.provider_id, "ROLLBACK", currency,
                         transaction_id=f"rb{rng.randrange(txn_space)}",
                         reference_transaction_id=bet.transaction_id, round_id=bet.round_id,
                         dup_after_ms=dup)  # fmt: skip
            else:
                c = Call(n, at, op, player, provider, "BALANCE", currency, dup_after_ms=dup)
            calls.append(c)
            n += 1
    return calls

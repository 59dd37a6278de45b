"""The battery: every situation in which the saga relies on the operator's wallet behaving
one way (design brief, sections 3 and 4), as a check that passes or says what to fix.

Each check plays its own certification player, ``<prefix><run id>-<check>`` (default
prefix ``aggcert-``), so no check sees another's balance and no real player is touched; it
reads the player's balance first and works relative to it, so a wallet may give its
certification players any starting balance of at least :data:`FUNDS_MIN`. Every command id
is derived from the run id, the operator, the player, the check and the step, so a run is
reproducible (``--run-id``) and two runs never share an id.

The checks run concurrently (each one's commands in order), as the saga's players do. A
check fails at its first wrong answer, with what was expected, what came back and what the
operator must change; a command left unanswered fails its check the same way. The latency
check reads every reply of the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from agg_certify.port import Command, Observed, Reply, WalletUnderTest
from agg_certify.stats import LatencySummary
from agg_domain.ids import derive_id

DEBIT_AMOUNT = 100
CREDIT_AMOUNT = 250
FUNDS_MIN = 1_000
"""Smallest starting balance a certification player needs (in minor units)."""
PROVIDER_ID = "aggcert"
"""The provider id of every certification command: no real provider has it."""


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class Step:
    """One command of a check and its reply, for the report."""

    kind: str
    command_id: str
    amount: int
    currency: str
    reference_command_id: str | None
    status: str | None
    """None: no reply within the timeout."""
    balance: int | None
    latency_us: int | None

    @classmethod
    def of(cls, observed: Observed) -> Step:
        c, r = observed.command, observed.reply
        return cls(
            kind=c.kind,
            command_id=c.command_id,
            amount=c.amount,
            currency=c.currency,
            reference_command_id=c.reference_command_id,
            status=None if r is None else r.status,
            balance=None if r is None else r.balance,
            latency_us=observed.latency_us,
        )


@dataclass(frozen=True)
class CheckResult:
    check_id: str
    title: str
    outcome: Outcome
    detail: str
    """What was observed (for a failure: what was expected and what came back)."""
    fix: str | None
    """What the operator must change (failures only)."""
    player_id: str
    steps: tuple[Step, ...]
    duration_ms: int


@dataclass(frozen=True)
class Config:
    operator_id: str
    run_id: str
    currency: str
    wrong_currency: str
    deadline_ms: int
    """The saga's wallet deadline (``SagaConfig.wallet_timeout_ms``)."""
    reply_timeout_ms: int = 10_000
    """How long the kit waits for a reply before it calls it missing (longer than the
    deadline, so that a slow wallet fails the latency check, not every check)."""
    session_ttl_s: int = 4 * 3600
    duplicate_count: int = 10
    latency_sample_count: int = 200
    latency_concurrency: int = 8
    player_prefix: str = "aggcert-"


class Failed(Exception):
    def __init__(self, detail: str, fix: str):
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class NotApplicable(Exception):
    pass


FIX_ANSWER = (
    "answer every command on agg.wallet.replies.<operator> with the command's key "
    "(operator_id:player_id) and its command_id, well within the saga's deadline"
)
FIX_DEDUPE = (
    "record every command_id with the reply it got, in the same transaction as its effect, "
    "and answer a repeated command_id from that record without applying it again"
)
FIX_DEDUPE_RACE = (
    "make the dedupe hold under concurrency: a unique key on command_id (or a per-player "
    "lock) so that copies arriving together are applied once and all get the first reply"
)


@dataclass
class Probe:
    """One check's player and its commands."""

    battery: Battery
    check_id: str
    steps: list[Observed] = field(default_factory=list)
    _count: int = 0

    @property
    def config(self) -> Config:
        return self.battery.config

    @property
    def player_id(self) -> str:
        return f"{self.config.player_prefix}{self.config.run_id}-{self.check_id}"

    def command(
        self,
        kind: str,
        amount: int = 0,
        *,
        command_id: str | None = None,
        reference: str | None = None,
        currency: str | None = None,
        issued_at: datetime | None = None,
        transaction: str | None = None,
        round_id: str | None = None,
    ) -> Command:
        self._count += 1
        step = f"{self._count}"
        cfg = self.config
        cid = command_id or derive_id(
            "cert", cfg.operator_id, self.player_id, cfg.run_id, self.check_id, step
        )
        return Command(
            command_id=cid,
            correlation_id=f"cert-{cfg.run_id}-{self.check_id}-{step}",
            operator_id=cfg.operator_id,
            player_id=self.player_id,
            kind=kind,
            amount=amount,
            currency=currency or cfg.currency,
            provider_id=PROVIDER_ID,
            transaction_id=transaction or f"{self.check_id}-{step}",
            round_id=round_id or f"{self.check_id}-round",
            game_id="aggcert-game",
            reference_command_id=reference,
            issued_at=issued_at or datetime.now(UTC),
        )

    async def send(self, command: Command) -> Reply:
        (observed,) = await self.send_together([command])
        assert observed.reply is not None
        return observed.reply

    async def send_together(self, commands: Sequence[Command]) -> list[Observed]:
        """Send ``commands`` at once; every one must be answered."""
        timeout_ms = self.config.reply_timeout_ms
        observed = await asyncio.gather(
            *(self.battery.wallet.call(c, timeout_ms) for c in commands)
        )
        self.steps.extend(observed)
        self.battery.observed.extend(observed)
        for o in observed:
            if o.reply is None:
                c = o.command
                raise Failed(
                    f"no reply to {c.kind} {c.command_id} within {timeout_ms} ms", FIX_ANSWER
                )
            if o.reply.player_id != o.command.player_id:
                raise Failed(
                    f"the reply to {o.command.command_id} names player {o.reply.player_id!r}, "
                    f"not {o.command.player_id!r}",
                    "copy the command's player_id into its reply",
                )
        return list(observed)

    async def balance(self, currency: str | None = None) -> int:
        reply = await self.send(self.command("BALANCE", currency=currency))
        if reply.status != "OK" or reply.balance is None:
            raise Failed(
                f"BALANCE of certification player {self.player_id} answered {reply.status} "
                f"with balance {reply.balance}",
                "answer BALANCE with OK and the balance; create certification players (ids "
                f"starting {self.config.player_prefix!r}) on first use with at least "
                f"{FUNDS_MIN} minor units, or provision them",
            )
        return reply.balance

    async def funded_balance(self) -> int:
        balance = await self.balance()
        if balance < FUNDS_MIN:
            raise Failed(
                f"certification player {self.player_id} has {balance}, fewer than the "
                f"{FUNDS_MIN} minor units the checks need",
                f"give certification players at least {FUNDS_MIN} minor units",
            )
        return balance


def expect(condition: bool, detail: str, fix: str) -> None:
    if not condition:
        raise Failed(detail, fix)


def expect_ok(reply: Reply, what: str, balance: int, fix: str) -> None:
    expect(
        reply.status == "OK" and reply.balance == balance,
        f"{what}: expected OK with balance {balance}, got {reply.status} with balance "
        f"{reply.balance}",
        fix,
    )


async def expect_balance(probe: Probe, balance: int, why: str, fix: str) -> None:
    now = await probe.balance()
    expect(now == balance, f"{why}: balance {now}, expected {balance}", fix)


# --- the checks -----------------------------------------------------------------------------


async def check_balance(p: Probe) -> str:
    balance = await p.balance()
    again = await p.balance()
    expect(
        again == balance,
        f"two BALANCE in a row answered {balance} then {again}",
        "a BALANCE must not move money",
    )
    reply = p.steps[-1].reply
    assert reply is not None
    expect(
        reply.currency == p.config.currency,
        f"BALANCE in {p.config.currency} answered in {reply.currency}",
        "answer in the command's currency",
    )
    return f"OK, balance {balance} {reply.currency}"


async def check_debit(p: Probe) -> str:
    b0 = await p.funded_balance()
    reply = await p.send(p.command("DEBIT", DEBIT_AMOUNT))
    fix = "apply a DEBIT the balance covers and answer OK with the balance after it"
    expect_ok(reply, f"DEBIT of {DEBIT_AMOUNT}", b0 - DEBIT_AMOUNT, fix)
    await expect_balance(p, b0 - DEBIT_AMOUNT, "after the debit", fix)
    return f"debited {DEBIT_AMOUNT}: {b0} -> {b0 - DEBIT_AMOUNT}"


async def check_credit(p: Probe) -> str:
    b0 = await p.balance()
    reply = await p.send(p.command("CREDIT", CREDIT_AMOUNT))
    fix = "apply every CREDIT and answer OK with the balance after it"
    expect_ok(reply, f"CREDIT of {CREDIT_AMOUNT}", b0 + CREDIT_AMOUNT, fix)
    await expect_balance(p, b0 + CREDIT_AMOUNT, "after the credit", fix)
    return f"credited {CREDIT_AMOUNT}: {b0} -> {b0 + CREDIT_AMOUNT}"


async def check_insufficient_funds(p: Probe) -> str:
    b0 = await p.funded_balance()
    reply = await p.send(p.command("DEBIT", b0 + 1))
    fix = (
        "refuse a DEBIT above the balance with INSUFFICIENT_FUNDS (not ERROR: the saga "
        "retries an ERROR) and move nothing; never let a balance go negative"
    )
    expect(
        reply.status == "INSUFFICIENT_FUNDS",
        f"DEBIT of {b0 + 1} with balance {b0}: expected INSUFFICIENT_FUNDS, got {reply.status} "
        f"with balance {reply.balance}",
        fix,
    )
    await expect_balance(p, b0, "after the refused debit", fix)
    exact = await p.send(p.command("DEBIT", b0))
    expect_ok(exact, f"DEBIT of the whole balance {b0}", 0, "accept a DEBIT equal to the balance")
    return f"DEBIT of {b0 + 1} refused INSUFFICIENT_FUNDS; DEBIT of exactly {b0} accepted"


async def check_duplicate_exact(p: Probe) -> str:
    b0 = await p.funded_balance()
    debit = p.command("DEBIT", DEBIT_AMOUNT)
    first = await p.send(debit)
    expect_ok(first, "the first DEBIT", b0 - DEBIT_AMOUNT, FIX_DEDUPE)
    again = await p.send(debit)
    expect(
        again == first,
        f"the same command_id again was answered {again.status}/{again.balance}, the first time "
        f"{first.status}/{first.balance}",
        FIX_DEDUPE,
    )
    await expect_balance(p, b0 - DEBIT_AMOUNT, "the same DEBIT sent twice", FIX_DEDUPE)
    return "the repeat got the first reply; money moved once"


async def check_duplicate_concurrent(p: Probe) -> str:
    b0 = await p.funded_balance()
    n = p.config.duplicate_count
    debit = p.command("DEBIT", DEBIT_AMOUNT)
    observed = await p.send_together([debit] * n)
    replies = [o.reply for o in observed]
    distinct = sorted({(r.status, r.balance) for r in replies if r is not None}, key=str)
    expect(
        distinct == [("OK", b0 - DEBIT_AMOUNT)],
        f"{n} copies sent at once were answered {distinct}; expected every one "
        f"OK with balance {b0 - DEBIT_AMOUNT}",
        FIX_DEDUPE_RACE,
    )
    await expect_balance(p, b0 - DEBIT_AMOUNT, f"{n} copies of one DEBIT", FIX_DEDUPE_RACE)
    return f"{n} copies at once: {n} identical replies, money moved once"


async def check_duplicate_conflict(p: Probe) -> str:
    b0 = await p.funded_balance()
    debit = p.command("DEBIT", DEBIT_AMOUNT)
    first = await p.send(debit)
    expect_ok(first, "the first DEBIT", b0 - DEBIT_AMOUNT, FIX_DEDUPE)
    other = p.command("DEBIT", DEBIT_AMOUNT + 50, command_id=debit.command_id)
    reply = await p.send(other)
    fix = (
        "compare a repeated command_id's content (player, kind, amount, currency, reference) "
        "with the recorded command; when it differs, refuse it (ERROR) and move nothing, "
        "never answer it with the stored reply"
    )
    expect(
        reply.status != "OK",
        f"the same command_id with amount {DEBIT_AMOUNT + 50} instead of {DEBIT_AMOUNT} was "
        f"answered OK with balance {reply.balance}"
        + (" (the stored reply)" if reply == first else ""),
        fix,
    )
    await expect_balance(p, b0 - DEBIT_AMOUNT, "after the conflicting repeat", fix)
    return f"refused with {reply.status}; nothing moved"


async def check_rollback_accepted(p: Probe) -> str:
    b0 = await p.funded_balance()
    debit = p.command("DEBIT", DEBIT_AMOUNT)
    expect_ok(await p.send(debit), "the DEBIT", b0 - DEBIT_AMOUNT, "accept the debit")
    cancel = p.command("CANCEL", DEBIT_AMOUNT, reference=debit.command_id)
    fix = "a CANCEL of an accepted DEBIT refunds its amount once and answers OK"
    expect_ok(await p.send(cancel), "the CANCEL of the accepted debit", b0, fix)
    again = await p.send(cancel)
    expect_ok(again, "the same CANCEL again", b0, FIX_DEDUPE)
    await expect_balance(p, b0, "after the debit and its cancel (sent twice)", fix)
    return f"refunded {DEBIT_AMOUNT} once; the repeated CANCEL changed nothing"


async def check_rollback_refused_debit(p: Probe) -> str:
    b0 = await p.funded_balance()
    debit = p.command("DEBIT", b0 + 1)
    refused = await p.send(debit)
    expect(refused.status != "OK", f"a DEBIT of {b0 + 1} with {b0} was accepted",
           "refuse a DEBIT above the balance")  # fmt: skip
    cancel = p.command("CANCEL", b0 + 1, reference=debit.command_id)
    fix = "a CANCEL of a refused DEBIT is acknowledged OK and moves nothing"
    expect_ok(await p.send(cancel), "the CANCEL of the refused debit", b0, fix)
    await expect_balance(p, b0, "after the cancel of a refused debit", fix)
    return "acknowledged OK, nothing moved"


async def check_rollback_unknown(p: Probe) -> str:
    b0 = await p.funded_balance()
    unknown = p.command("DEBIT", DEBIT_AMOUNT)  # never sent
    cancel = p.command("CANCEL", DEBIT_AMOUNT, reference=unknown.command_id)
    fix = (
        "a CANCEL of a DEBIT you never received is acknowledged OK (the saga resends a "
        "CANCEL until it is) and moves nothing; remember it, so that the debit is refused "
        "if it arrives later"
    )
    expect_ok(await p.send(cancel), "the CANCEL of an unknown debit", b0, fix)
    await expect_balance(p, b0, "after the cancel of an unknown debit", fix)
    return "acknowledged OK, nothing moved"


async def check_rollback_twice(p: Probe) -> str:
    b0 = await p.funded_balance()
    debit = p.command("DEBIT", DEBIT_AMOUNT)
    expect_ok(await p.send(debit), "the DEBIT", b0 - DEBIT_AMOUNT, "accept the debit")
    first = p.command("CANCEL", DEBIT_AMOUNT, reference=debit.command_id)
    expect_ok(await p.send(first), "the first CANCEL", b0, "refund an accepted debit on CANCEL")
    second = p.command("CANCEL", DEBIT_AMOUNT, reference=debit.command_id)
    fix = (
        "refund a debit at most once, whatever the CANCEL's own command_id: look up the "
        "cancels of reference_command_id, acknowledge a second one OK and move nothing"
    )
    expect_ok(await p.send(second), "a second CANCEL (another command_id) of it", b0, fix)
    await expect_balance(p, b0, "after two cancels of one debit", fix)
    return "the second CANCEL was acknowledged without a second refund"


async def check_debit_after_cancel(p: Probe) -> str:
    b0 = await p.funded_balance()
    debit = p.command("DEBIT", DEBIT_AMOUNT)
    cancel = p.command("CANCEL", DEBIT_AMOUNT, reference=debit.command_id)
    expect_ok(await p.send(cancel), "the CANCEL before its debit", b0,
              "acknowledge a CANCEL of an unknown debit OK")  # fmt: skip
    reply = await p.send(debit)
    fix = (
        "refuse a DEBIT whose command_id an earlier CANCEL named (the saga already answered "
        "the provider that the bet is rolled back) and move nothing"
    )
    expect(
        reply.status != "OK",
        f"the DEBIT after its CANCEL was accepted (OK, balance {reply.balance})",
        fix,
    )
    await expect_balance(p, b0, "after a debit that came after its cancel", fix)
    return f"refused with {reply.status}; nothing moved"


async def check_credit_after_expiry(p: Probe) -> str:
    b0 = await p.funded_balance()
    ttl = timedelta(seconds=p.config.session_ttl_s)
    bet_at = datetime.now(UTC) - ttl - timedelta(hours=1)
    debit = p.command("DEBIT", DEBIT_AMOUNT, issued_at=bet_at)
    expect_ok(await p.send(debit), "the DEBIT of the round", b0 - DEBIT_AMOUNT,
              "accept a debit whatever its issued_at")  # fmt: skip
    credit = p.command("CREDIT", CREDIT_AMOUNT, issued_at=bet_at + ttl + timedelta(minutes=1))
    expected = b0 - DEBIT_AMOUNT + CREDIT_AMOUNT
    fix = (
        "accept every CREDIT, however long after the bet or the session it comes and however "
        "old its issued_at (a resend keeps the first one): a credit is owed money, and the "
        "saga resends a refused one until it is accepted"
    )
    expect_ok(await p.send(credit), "a CREDIT after the session's lifetime", expected, fix)
    return f"a CREDIT {p.config.session_ttl_s + 60} s after the bet was accepted"


async def check_wrong_currency(p: Probe) -> str:
    b0 = await p.funded_balance()
    wrong = p.config.wrong_currency
    reply = await p.send(p.command("DEBIT", DEBIT_AMOUNT, currency=wrong))
    fix = (
        f"refuse a command in a currency that is not the player's ({wrong} for a "
        f"{p.config.currency} player) and move nothing"
    )
    expect(
        reply.status != "OK",
        f"a DEBIT in {wrong} of a {p.config.currency} player was accepted "
        f"(balance {reply.balance} {reply.currency})",
        fix,
    )
    await expect_balance(p, b0, f"after the DEBIT in {wrong}", fix)
    return f"a DEBIT in {wrong} refused with {reply.status}"


async def check_signature(p: Probe) -> str:
    reason = p.battery.wallet.signature_not_applicable
    if reason is not None:
        raise NotApplicable(reason)
    b0 = await p.funded_balance()
    observed = await p.battery.wallet.call_badly_signed(
        p.command("DEBIT", DEBIT_AMOUNT), p.config.reply_timeout_ms
    )
    p.steps.append(observed)
    fix = "verify the signature of every request and refuse a bad one without applying it"
    expect(
        observed.reply is None or observed.reply.status != "OK",
        "a DEBIT with a wrong signature was accepted",
        fix,
    )
    await expect_balance(p, b0, "after the badly signed debit", fix)
    return "a wrongly signed request was refused"


@dataclass(frozen=True)
class Check:
    check_id: str
    title: str
    verifies: str
    """What the check sends and expects (the docs and the HTML report show it)."""
    run: Callable[[Probe], Awaitable[str]]


CHECKS: tuple[Check, ...] = (
    Check("balance", "Balance", "BALANCE twice: OK, the same balance, in the asked currency",
          check_balance),
    Check("debit", "Debit", "DEBIT of 100: OK with the balance 100 lower; BALANCE agrees",
          check_debit),
    Check("credit", "Credit", "CREDIT of 250: OK with the balance 250 higher; BALANCE agrees",
          check_credit),
    Check("insufficient_funds", "Insufficient funds",
          "DEBIT of balance + 1: INSUFFICIENT_FUNDS, nothing moves; DEBIT of exactly the "
          "balance: OK with 0", check_insufficient_funds),
    Check("duplicate_exact", "Exact duplicate",
          "the same DEBIT (same command_id) twice: the same reply, money moved once",
          check_duplicate_exact),
    Check("duplicate_concurrent", "Concurrent duplicates",
          "N copies of one DEBIT at once: N identical OK replies, money moved once",
          check_duplicate_concurrent),
    Check("duplicate_conflict", "Same id, other content",
          "a DEBIT, then its command_id with another amount: refused (not OK, not the stored "
          "reply), nothing moves", check_duplicate_conflict),
    Check("rollback_accepted", "Rollback of an accepted debit",
          "DEBIT, CANCEL of it: refunded once, OK; the same CANCEL again changes nothing",
          check_rollback_accepted),
    Check("rollback_refused_debit", "Rollback of a refused debit",
          "a refused DEBIT, CANCEL of it: OK, nothing moves", check_rollback_refused_debit),
    Check("rollback_unknown", "Rollback of an unknown debit",
          "CANCEL of a DEBIT never sent: OK, nothing moves", check_rollback_unknown),
    Check("rollback_twice", "Rollback of a rolled-back debit",
          "DEBIT, CANCEL, a second CANCEL with another command_id: OK, refunded once",
          check_rollback_twice),
    Check("debit_after_cancel", "Debit after its cancel",
          "CANCEL of a DEBIT, then that DEBIT: refused, nothing moves",
          check_debit_after_cancel),
    Check("credit_after_expiry", "Credit after session expiry",
          "a DEBIT issued a session lifetime ago and its CREDIT issued after the session "
          "expired: the CREDIT is accepted (owed money)", check_credit_after_expiry),
    Check("wrong_currency", "Wrong currency",
          "a DEBIT in a currency that is not the player's: refused, nothing moves",
          check_wrong_currency),
    Check("signature", "Signature refusal",
          "a request with a wrong signature: refused, nothing moves (HTTP wallets only)",
          check_signature),
)  # fmt: skip

LATENCY_ID = "latency"
LATENCY_TITLE = "Latency"
LATENCY_VERIFIES = (
    "p50, p95 and p99 of every reply of the run (and a burst of BALANCE commands): below the "
    "saga's wallet deadline, every command answered"
)
ALL_CHECK_IDS = (*(c.check_id for c in CHECKS), LATENCY_ID)


@dataclass
class Battery:
    wallet: WalletUnderTest
    config: Config
    observed: list[Observed] = field(default_factory=list)

    async def run_check(self, check: Check) -> CheckResult:
        probe = Probe(self, check.check_id)
        started = time.perf_counter()
        fix: str | None = None
        try:
            detail = await check.run(probe)
            outcome = Outcome.PASS
        except Failed as failure:
            outcome, detail, fix = Outcome.FAIL, failure.detail, failure.fix
        except NotApplicable as reason:
            outcome, detail = Outcome.NOT_APPLICABLE, str(reason)
        return CheckResult(
            check_id=check.check_id,
            title=check.title,
            outcome=outcome,
            detail=detail,
            fix=fix,
            player_id=probe.player_id,
            steps=tuple(Step.of(o) for o in probe.steps),
            duration_ms=round((time.perf_counter() - started) * 1000),
        )

    async def run(
        self, on_result: Callable[[CheckResult], None] = lambda _: None
    ) -> tuple[list[CheckResult], LatencySummary]:
        """Every check, concurrently, then the latency burst; ``on_result`` hears each
        result as it comes (for progress). Results come back in the order of
        :data:`CHECKS`, the latency check last."""

        async def one(check: Check) -> CheckResult:
            result = await self.run_check(check)
            on_result(result)
            return result

        results = list(await asyncio.gather(*(one(c) for c in CHECKS)))
        latency_result, summary = await self.run_latency()
        on_result(latency_result)
        return [*results, latency_result], summary

    async def run_latency(self) -> tuple[CheckResult, LatencySummary]:
        cfg = self.config
        probe = Probe(self, LATENCY_ID)
        started = time.perf_counter()
        gate = asyncio.Semaphore(cfg.latency_concurrency)
        burst: list[Observed] = []

        async def sample() -> None:
            async with gate:
                command = probe.command("BALANCE")
                burst.append(await self.wallet.call(command, cfg.reply_timeout_ms))

        await asyncio.gather(*(sample() for _ in range(cfg.latency_sample_count)))
        self.observed.extend(burst)
        latencies = [o.latency_us for o in self.observed if o.latency_us is not None]
        missing = sum(o.reply is None for o in self.observed)
        summary = LatencySummary.of(latencies, missing, cfg.deadline_ms)
        shown = summary_text(summary)
        if summary.within_deadline:
            outcome, detail, fix = Outcome.PASS, shown, None
        else:
            outcome, detail = Outcome.FAIL, shown
            fix = (
                f"answer within the saga's deadline of {cfg.deadline_ms} ms (p99 well below "
                "it): a debit answered later is cancelled and the provider is told to retry; "
                "look at batching, locks and synchronous calls on the reply path"
            )
        sampled = tuple(Step.of(o) for o in burst[:20])  # the report shows a few
        return (
            CheckResult(LATENCY_ID, LATENCY_TITLE, outcome, detail, fix, probe.player_id,
                        sampled, round((time.perf_counter() - started) * 1000)),
            summary,
        )  # fmt: skip


def summary_text(s: LatencySummary) -> str:
    if s.count == 0:
        return f"no replies ({s.missing_count} missing)"
    assert s.p50_us is not None and s.p95_us is not None and s.p99_us is not None
    text = (
        f"p50 {s.p50_us / 1000:.1f} ms, p95 {s.p95_us / 1000:.1f} ms, p99 {s.p99_us / 1000:.1f} "
        f"ms over {s.count} replies (deadline {s.deadline_ms} ms)"
    )
    if s.missing_count:
        text += f"; {s.missing_count} commands unanswered"
    return text

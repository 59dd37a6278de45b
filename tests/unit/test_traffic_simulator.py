"""The traffic simulator's pure parts (``aggregator simulate``, ``make run``): the paytable
whose expected payout is the configured RTP exactly, the one-screen summary drawn from the
stats, and the choice between redrawing a terminal and writing plain lines."""

from __future__ import annotations

import io
import math
import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agg_config.settings import load_settings
from agg_config.tenants import load_tenants, parse_tenants
from agg_simulator.__main__ import main as simulate_main
from agg_simulator.__main__ import per_operator
from agg_simulator.model import Expectation
from agg_simulator.paytable import (
    RTP_DEFAULT,
    WIN_SHAPE,
    Outcome,
    Paytable,
    parse_rtp_percent,
    paytable_for,
)
from agg_simulator.run import STAKES, Simulator, controls_for, gets_campaign
from agg_simulator.summary import (
    CLEAR_LINE_END,
    CLEAR_SCREEN,
    HOME,
    ROWS_MAX,
    GameTally,
    LivePrinter,
    Stats,
    frame,
    interval_line,
    is_terminal,
    summary_lines,
)

# --- the paytable -------------------------------------------------------------------------


def expected_win(table: Paytable, stake: int) -> Fraction:
    """E[win] on ``stake`` from first principles: each outcome's whole-unit payout times its
    probability, weights over the total weight."""
    total = sum(o.weight for o in table.outcomes)
    return sum((Fraction(o.weight, total) * table.payout(stake, o) for o in table.outcomes),
               Fraction(0))  # fmt: skip


@pytest.mark.parametrize(
    ("percent", "rtp"),
    [
        ("96", Fraction(24, 25)),
        ("94.5", Fraction(189, 200)),
        ("97.25", Fraction(389, 400)),
        ("88.88", Fraction(2222, 2500)),
        ("99.999999", Fraction(99_999_999, 100_000_000)),
        ("100", Fraction(1)),
        ("0", Fraction(0)),
    ],
)
def test_the_expected_payout_is_the_configured_rtp_exactly(percent: str, rtp: Fraction) -> None:
    assert parse_rtp_percent(percent) == rtp
    table = paytable_for(rtp)
    assert table.expectation == rtp
    for stake in STAKES:
        assert stake % table.stake_step == 0
        assert expected_win(table, stake) == rtp * stake, stake


def test_the_default_is_96_percent_with_most_rounds_losing() -> None:
    table = paytable_for(RTP_DEFAULT)
    assert RTP_DEFAULT == Fraction(96, 100)
    assert [(o.weight, o.multiplier) for o in table.outcomes] == [
        (13_703, 0), (2_100, Fraction(1, 2)), (1_500, 1), (1_500, 2), (750, 5), (300, 10),
        (120, 25), (24, 100), (3, 500),
    ]  # fmt: skip
    assert table.total_weight == 20_000
    assert table.hit_rate == Fraction(6_297, 20_000)  # about one round in three wins
    assert table.probability(table.outcomes[-1]) == Fraction(3, 20_000)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=100_000_000))
def test_any_rtp_up_to_100_percent_is_exact_and_most_rounds_lose(millionths: int) -> None:
    rtp = Fraction(millionths, 100_000_000)
    table = paytable_for(rtp)
    assert table.expectation == rtp
    assert all(o.weight >= 0 for o in table.outcomes)
    assert table.hit_rate < Fraction(1, 2)
    # the winning outcomes keep their relative frequencies
    wins = [o for o in table.outcomes if o.multiplier]
    scale = Fraction(wins[0].weight, WIN_SHAPE[0][0])
    assert [(o.weight, o.multiplier) for o in wins] == [(w * scale, m) for w, m in WIN_SHAPE]
    assert expected_win(table, 500) == rtp * 500


@pytest.mark.parametrize(
    "text", ["100.5", "101", "-1", "96%", "abc", "1/3", "1e2", "", "96.1234567", "0x60"]
)
def test_an_rtp_that_is_not_a_percentage_up_to_100_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rtp_percent(text)


@pytest.mark.parametrize("rtp", [Fraction(-1, 100), Fraction(101, 100)])
def test_a_paytable_out_of_range_is_refused(rtp: Fraction) -> None:
    with pytest.raises(ValueError):
        paytable_for(rtp)


@pytest.mark.parametrize("stake", [0, -10, 1, 15])
def test_a_win_that_is_not_whole_minor_units_is_refused_not_rounded(stake: int) -> None:
    table = paytable_for(RTP_DEFAULT)
    half = next(o for o in table.outcomes if o.multiplier == Fraction(1, 2))
    with pytest.raises(ValueError):
        table.payout(stake, half)
    assert table.payout(16, half) == 8
    assert table.payout(15, Outcome(1, Fraction(2))) == 30


@pytest.mark.parametrize(("percent", "seed"), [("96", 1), ("90", 2)])
def test_many_seeded_rounds_pay_back_the_rtp_within_the_variance_bound(
    percent: str, seed: int
) -> None:
    """400,000 rounds at the simulator's stakes. The sum of wins has variance
    ``Var(win / stake) * sum(stake**2)``, so the observed RTP lies within 5 standard
    deviations, ``5 * sqrt(Var * sum(stake**2)) / sum(stake)``, of the configured one (a
    seeded run: it passes or fails the same everywhere; by Chebyshev a run off by 5 sigma has
    probability under 4 %, by the normal approximation under one in a million); and so does
    each outcome's frequency, within 5 sigma of its binomial count."""
    rtp = parse_rtp_percent(percent)
    table = paytable_for(rtp)
    rng = random.Random(seed)
    rounds = 400_000
    stake_sum = stake_squares = win_sum = 0
    seen: Counter[Fraction] = Counter()
    for _ in range(rounds):
        stake = rng.choice(STAKES)
        outcome = table.draw(rng)
        seen[outcome.multiplier] += 1
        win_sum += table.payout(stake, outcome)
        stake_sum += stake
        stake_squares += stake * stake
    observed = Fraction(win_sum, stake_sum)
    sigma = math.sqrt(float(table.variance) * stake_squares) / stake_sum
    assert 0 < sigma < 0.03
    assert abs(float(observed - rtp)) <= 5 * sigma, (float(observed), float(rtp), sigma)
    for outcome in table.outcomes:
        p = float(table.probability(outcome))
        count_sigma = math.sqrt(rounds * p * (1 - p))
        assert abs(seen[outcome.multiplier] - rounds * p) <= 5 * count_sigma, outcome
    assert seen[Fraction(0)] > rounds / 2, "most rounds lose"


def test_each_game_gets_the_default_or_its_own_rtp_and_unknown_games_are_refused() -> None:
    app_settings = load_settings()
    tenants = load_tenants(app_settings.tenants_file)
    sim = Simulator(app_settings, tenants, "http://127.0.0.1:9", players=1, concurrency=1,
                    rtp=Fraction(95, 100), game_rtp={"nova-starfall": Fraction(9, 10)})  # fmt: skip
    assert {g: t.rtp for g, t in sim.paytables.items()} == {
        g.id: Fraction(9, 10) if g.id == "nova-starfall" else Fraction(95, 100)
        for g in tenants.games
    }
    # every provider of the dev file has a simulated client (hub88-v1 with its dev key)
    assert set(sim.clients) == {p.id for p in tenants.providers}
    with pytest.raises(ValueError, match="no-such-game"):
        Simulator(app_settings, tenants, "http://127.0.0.1:9", players=1, concurrency=1,
                  game_rtp={"no-such-game": RTP_DEFAULT})  # fmt: skip


def dev_tenants_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(load_settings().tenants_file.read_text())
    return data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: None,
         {"op-alpha": ["nova-starfall", "nova-megaways", "orbit-blackjack", "hub-baccarat",
                       "reels-fruitparty", "live-lightning"],
          "op-beta": ["nova-starfall", "nova-megaways"],
          "op-gamma": ["nova-starfall", "nova-megaways", "hub-baccarat", "reels-fruitparty",
                       "live-lightning"],
          "op-delta": ["nova-starfall", "nova-megaways", "orbit-blackjack", "hub-baccarat",
                       "reels-fruitparty", "live-lightning"]}),
        # a disabled provider's games are not played
        (lambda d: d["providers"][1].update(enabled=False),
         {"op-alpha": ["nova-starfall", "nova-megaways", "hub-baccarat", "reels-fruitparty",
                       "live-lightning"],
          "op-beta": ["nova-starfall", "nova-megaways"],
          "op-gamma": ["nova-starfall", "nova-megaways", "hub-baccarat", "reels-fruitparty",
                       "live-lightning"],
          "op-delta": ["nova-starfall", "nova-megaways", "hub-baccarat", "reels-fruitparty",
                       "live-lightning"]}),
        # an operator on an HTTP wallet is played at too: in the local stack the reference HTTP
        # wallet serves it, with its ledger where the money check reads it
        (lambda d: d["operators"][1].update(wallet={
            "mode": "http", "url": "http://127.0.0.1:9/w", "secret": {"value": "w" * 16}}),
         {"op-alpha": ["nova-starfall", "nova-megaways", "orbit-blackjack", "hub-baccarat",
                       "reels-fruitparty", "live-lightning"],
          "op-beta": ["nova-starfall", "nova-megaways"],
          "op-gamma": ["nova-starfall", "nova-megaways", "hub-baccarat", "reels-fruitparty",
                       "live-lightning"],
          "op-delta": ["nova-starfall", "nova-megaways", "orbit-blackjack", "hub-baccarat",
                       "reels-fruitparty", "live-lightning"]}),
    ],
)  # fmt: skip
def test_the_operators_and_games_a_run_plays(
    change: Callable[[dict[str, Any]], None], expected: dict[str, list[str]]
) -> None:
    data = dev_tenants_data()
    change(data)
    sim = Simulator(load_settings(), parse_tenants(data), "http://127.0.0.1:9", players=1,
                    concurrency=1)  # fmt: skip
    assert {op.id: [g.id for g in games] for op, games in sim.playable()} == expected


@pytest.mark.parametrize(
    "argv",
    [["--rtp", "101"], ["--rtp", "ninety"], ["--game-rtp", "nova-starfall"],
     ["--game-rtp", "=96"], ["--game-rtp", "no-such-game=96"]],
)  # fmt: skip
def test_the_command_refuses_a_bad_rtp_before_it_sends_anything(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        simulate_main(["--base-url", "http://127.0.0.1:9", *argv])
    assert exit_.value.code == 2
    assert "opening" not in capsys.readouterr().out


def test_the_dev_file_plays_every_protocol_at_each_wallet_mode() -> None:
    tenants = load_tenants(load_settings().tenants_file)
    sim = Simulator(load_settings(), tenants, "http://127.0.0.1:9", players=1, concurrency=1)
    played = {
        (sim.clients[g.provider].protocol, op.wallet.mode)
        for op, games in sim.playable()
        for g in games
    }
    protocols = {"canonical-v1", "hub88-v1", "pragmatic-v1", "evolution-v1"}
    assert played == {(p, mode) for p in protocols for mode in ("kafka", "http", "transfer")}


@pytest.mark.parametrize(
    ("problems", "lines"),
    [
        ([], ["money check op-alpha (kafka): OK for 2 players",
              "money check op-gamma (http): OK for 1 players"]),
        ([("op-gamma", "('op-gamma', 'p-3', 'EUR'): wallet moved -5, answers say -10")],
         ["money check op-alpha (kafka): OK for 2 players",
          "money check op-gamma (http): FAILED for 1 of 1 players"]),
        # a player the wallet moved without any answer still counts against its operator
        ([("op-beta", "('op-beta', 'p-9', 'EUR'): wallet moved -5, answers say 0")],
         ["money check op-alpha (kafka): OK for 2 players",
          "money check op-beta (kafka): FAILED for 1 of 0 players",
          "money check op-gamma (http): OK for 1 players"]),
    ],
)  # fmt: skip
def test_the_money_check_is_reported_per_operator(
    problems: list[tuple[str, str]], lines: list[str]
) -> None:
    expect = Expectation()
    for op, player in (("op-alpha", "p-1"), ("op-alpha", "p-2"), ("op-gamma", "p-3")):
        expect.bet_answered((op, player, "EUR"), "prov-nova", f"tx-{player}", 10, "OK")
    modes = {"op-alpha": "kafka", "op-beta": "kafka", "op-gamma": "http"}
    assert [v.line() for v in per_operator(expect, problems, modes)] == lines


# --- the summary --------------------------------------------------------------------------


def stats_of_a_run() -> Stats:
    """Ten seconds of a run at t=100..110: the last interval began at 109.5."""
    stats = Stats(started_s=100.0)
    for i in range(100):  # 100 callbacks, latencies 1..100 ms
        operator = "op-alpha" if i % 4 else "op-beta"
        provider = "prov-nova" if i % 2 else "prov-orbit"
        status = "OK" if i < 90 else ("INSUFFICIENT_FUNDS" if i < 97 else "RETRY_LATER")
        stats.record(operator, provider, "bet" if i % 2 else "win", status, float(i + 1))
    stats.next_interval(109.5)
    for i in range(10):  # 10 in the last half second, 200..209 ms
        stats.record("op-alpha", "prov-nova", "bet", "OK", 200.0 + i)
    starfall = stats.games["nova-starfall"] = GameTally(paytable_for(Fraction(96, 100)))
    starfall.settle(1_000, 950)
    starfall.settle(1_000, 950)
    stats.games["orbit-blackjack"] = GameTally(paytable_for(Fraction(90, 100)))
    stats.bets_in.update({"EUR": 2_000, "JPY": 500})
    stats.wins_out.update({"EUR": 1_900})
    return stats


def row(lines: list[str], name: str) -> list[str]:
    [found] = [line for line in lines if line.startswith(name + " ")]
    return found[len(name) :].split()


def test_the_live_summary_rows_rates_latencies_outcomes_and_rtp() -> None:
    lines = summary_lines(stats_of_a_run(), now_s=110.0, final=False)
    assert lines[0].startswith("simulation 10.0 s  110 callbacks  11/s")
    assert "last 0.5 s" in lines[0]
    # callbacks, per s, p50, p90, p99, OK, refused, retry
    assert row(lines, "all") == ["110", "20", "205.0", "209.0", "209.0", "100", "7", "3"]
    assert row(lines, "operator op-alpha")[:2] == ["85", "20"]
    assert row(lines, "operator op-beta") == ["25", "0", "0.0", "0.0", "0.0", "23", "2", "0"]
    assert row(lines, "provider prov-nova")[:2] == ["60", "20"]
    assert row(lines, "provider prov-orbit")[0] == "50"
    assert "outcomes: OK 100  INSUFFICIENT_FUNDS 7  RETRY_LATER 3" in lines
    assert "actions:  bet 60  win 50" in lines
    # two standard deviations of two rounds of 1,000: 2 * sqrt(Var * 2 * 1000**2) / 2000
    two_sigma = 2 * math.sqrt(float(paytable_for(RTP_DEFAULT).variance) * 2e6) / 2000
    assert row(lines, "nova-starfall") == ["2", "2,000", "1,900", "95.00%", "96.00%",
                                           f"+/-{two_sigma * 100:.1f}"]  # fmt: skip
    assert row(lines, "orbit-blackjack") == ["0", "0", "0", "-", "90.00%", "-"]
    assert lines[-1] == (
        "money (minor units): EUR in 2,000 out 1,900 GGR 100  JPY in 500 out 0 GGR 500"
    )
    assert len(lines) <= 23 and max(map(len, lines)) < 80, "one 80x24 screen"


def test_the_final_report_covers_the_whole_run() -> None:
    lines = summary_lines(stats_of_a_run(), now_s=110.0, final=True)
    assert "whole run" in lines[0]
    # 110 latencies: 1..100 and 200..209; rate over the 10 s
    assert row(lines, "all")[:5] == ["110", "11", "56.0", "100.0", "208.0"]
    assert row(lines, "nova-starfall")[3:5] == ["95.00%", "96.00%"]


def test_the_final_report_has_a_row_per_protocol_and_wallet_mode() -> None:
    stats = Stats(started_s=0.0)
    for i, (protocol, wallet) in enumerate([("canonical-v1", "kafka"), ("evolution-v1", "http"),
                                            ("evolution-v1", "kafka")]):  # fmt: skip
        stats.record("op-alpha", "prov-x", "bet", "OK", float(i), protocol, wallet)
    final = summary_lines(stats, now_s=1.0, final=True)
    assert row(final, "proto canonical-v1")[0] == "1"
    assert row(final, "proto evolution-v1")[0] == "2"
    assert (row(final, "wallet kafka")[0], row(final, "wallet http")[0]) == ("2", "1")
    live = summary_lines(stats, now_s=1.0, final=False)
    assert not [line for line in live if line.startswith(("proto ", "wallet "))]


def test_the_summary_stays_one_screen_with_many_tenants() -> None:
    stats = Stats(started_s=0.0)
    for i in range(30):
        stats.record(f"op-{i:02}", f"prov-{i:02}", "bet", "OK", 1.0)
        stats.games[f"game-{i:02}"] = GameTally(paytable_for(RTP_DEFAULT))
    lines = summary_lines(stats, now_s=1.0, final=False)
    assert f"  ... and {30 - ROWS_MAX} more operators" in lines
    assert f"  ... and {30 - ROWS_MAX} more providers" in lines
    assert f"  ... and {30 - ROWS_MAX} more games" in lines
    stats.errors["ConnectError"] += 1
    lines = summary_lines(stats, now_s=1.0, final=False)
    assert len(lines) <= 23, "one 24-line screen"


def test_an_interval_is_one_plain_line() -> None:
    line = interval_line(stats_of_a_run(), now_s=110.0)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("t=10.0s callbacks=110 rate=20/s p50=205.0ms")
    assert "ok=100 refused=7 retried=3 errors=0" in line
    assert line.endswith("nova-starfall=95.00%/96.00% orbit-blackjack=-/90.00%")


def test_a_frame_redraws_the_screen_in_place() -> None:
    lines = ["a" * 50, "b", "c", "d"]
    first = frame(lines, columns=20, rows=4, first=True)
    assert first == (CLEAR_SCREEN + HOME + "a" * 20 + CLEAR_LINE_END + "\n" + "b"
                     + CLEAR_LINE_END + "\n" + "c" + CLEAR_LINE_END + "\n\x1b[J")  # fmt: skip
    again = frame(lines, columns=80, rows=40, first=False)
    assert again.startswith(HOME) and CLEAR_SCREEN not in again
    assert again.count("\n") == 4


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "terminal"), [(Terminal(), True), (io.StringIO(), False), (object(), False)]
)
def test_a_terminal_is_told_from_a_file_or_pipe(stream: object, terminal: bool) -> None:
    assert is_terminal(stream) is terminal


def test_a_terminal_gets_one_screen_redrawn_and_a_pipe_one_line_per_interval() -> None:
    tty, pipe = Terminal(), io.StringIO()
    for printer in (LivePrinter(tty), LivePrinter(pipe)):
        for now in (110.0, 111.0, 112.0):
            printer(stats_of_a_run(), now, False)
        printer(stats_of_a_run(), 113.0, True)
    screens = tty.getvalue()
    assert screens.startswith(CLEAR_SCREEN + HOME)
    assert screens.count(CLEAR_SCREEN) == 1 and screens.count(HOME) == 4
    plain = pipe.getvalue().splitlines()
    assert "\x1b" not in pipe.getvalue()
    assert [line.split()[0] for line in plain[:3]] == ["t=10.0s", "t=11.0s", "t=12.0s"]
    final = summary_lines(stats_of_a_run(), 113.0, final=True)
    assert plain[3:] == final
    assert screens.endswith("\n".join(final) + "\n")


def test_the_final_report_says_who_was_given_controls_and_what_they_refused() -> None:
    stats = Stats(started_s=0.0)
    stats.controls.update({"wager limit": 3, "self-excluded": 1})
    for status in ("OK", "LIMIT_EXCEEDED", "LIMIT_EXCEEDED", "PLAYER_BLOCKED"):
        stats.record("op-alpha", "prov-x", "bet", status, 1.0)
    final = summary_lines(stats, now_s=1.0, final=True)
    assert final[-1] == ("player controls: wager limit 3  self-excluded 1; refused: "
                         "LIMIT_EXCEEDED 2  PLAYER_BLOCKED 1")  # fmt: skip
    assert not any("player controls" in line for line in summary_lines(stats, 1.0, False))


def test_one_player_in_ten_gets_a_wager_limit_and_one_in_twenty_a_self_exclusion() -> None:
    given = [controls_for(i, "EUR") for i in range(40)]
    assert [i for i, g in enumerate(given) if g and g[0] == "wager limit"] == [3, 13, 23, 33]
    assert [i for i, g in enumerate(given) if g and g[0] == "self-excluded"] == [7, 27]
    assert given[3] == ("wager limit", {"limits": [
        {"kind": "wager", "period": "day", "amount": 2_000, "currency": "EUR"}]})  # fmt: skip


def test_the_final_report_counts_bonus_money_apart_from_the_games_wins() -> None:
    stats = Stats(started_s=0.0)
    stats.bonus.update({"campaigns granted": 3, "free spins": 15, "jackpots": 1})
    stats.bonus_out.update({"BONUS EUR": 340, "JACKPOT EUR": 5_000})
    stats.record("op-alpha", "prov-x", "bet", "OK", 1.0)
    final = summary_lines(stats, now_s=1.0, final=True)
    assert ("bonus money (outside GGR): free spins 15  campaigns granted 3  jackpots 1;"
            " credited: JACKPOT EUR 5,000  BONUS EUR 340") in final  # fmt: skip
    assert not any("bonus money" in line for line in summary_lines(stats, 1.0, False))


def test_one_player_in_eight_of_a_free_round_protocol_gets_a_campaign() -> None:
    assert [i for i in range(24) if gets_campaign(i, "canonical-v1")] == [5, 13, 21]
    assert gets_campaign(5, "pragmatic-v1") and gets_campaign(5, "hub88-v1")
    assert not gets_campaign(5, "evolution-v1")  # its calls carry no free round

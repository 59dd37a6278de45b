-- Bonus, jackpot and promotion wins (WinCredited.win_kind BONUS, JACKPOT, PROMO) are money the
-- game did not pay out of its stakes: revenue reports them in columns of their own, outside
-- `wins` and so outside GGR (bets - wins - refunds), as operators' reports expect.
ALTER TABLE {schema}.revenue_daily
    ADD COLUMN bonus_wins   bigint NOT NULL DEFAULT 0,
    ADD COLUMN jackpot_wins bigint NOT NULL DEFAULT 0,
    ADD COLUMN promo_wins   bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE VIEW {schema}.provider_daily_totals AS
SELECT provider_id, day, currency,
       sum(bets) AS bets, sum(wins) AS wins, sum(refunds) AS refunds, sum(ggr) AS ggr,
       sum(bonus_wins) AS bonus_wins, sum(jackpot_wins) AS jackpot_wins,
       sum(promo_wins) AS promo_wins
FROM {schema}.revenue_daily
GROUP BY provider_id, day, currency;

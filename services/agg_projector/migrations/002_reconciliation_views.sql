-- Reconciliation views over the projections. Each row is something a person should look at;
-- `aggregator reconcile` prints them and exits non-zero when any exists.

-- rounds still open, with their age (the report filters by a configurable age)
CREATE VIEW {schema}.open_rounds AS
SELECT operator_id, provider_id, round_id, player_id, game_id, currency,
       bet_total, win_total, refund_total, opened_at, updated_at
FROM {schema}.rounds
WHERE status = 'OPEN';

-- debits that timed out and whose compensating cancel the wallet has not acknowledged yet
CREATE VIEW {schema}.unresolved_debits AS
SELECT operator_id, provider_id, transaction_id, player_id, amount, currency, updated_at
FROM {schema}.transactions
WHERE kind = 'BET' AND status = 'TIMED_OUT';

-- rollbacks that named a bet the aggregator had not seen (tombstones), and whether that bet
-- arrived later (it was then refused with BET_ROLLED_BACK)
CREATE VIEW {schema}.rollback_tombstones AS
SELECT r.operator_id, r.provider_id, r.transaction_id AS rollback_transaction_id,
       r.reference_transaction_id AS bet_transaction_id, r.player_id, r.updated_at,
       b.status AS bet_status,
       (b.transaction_id IS NOT NULL) AS bet_arrived_later
FROM {schema}.transactions r
LEFT JOIN {schema}.transactions b
       ON b.operator_id = r.operator_id AND b.provider_id = r.provider_id
      AND b.transaction_id = r.reference_transaction_id AND b.kind = 'BET'
WHERE r.kind = 'ROLLBACK' AND r.status = 'TOMBSTONE';

-- credits (wins) the wallet has not acknowledged yet: money owed to players
CREATE VIEW {schema}.credits_owed AS
SELECT operator_id, provider_id, transaction_id, player_id, amount, currency, updated_at
FROM {schema}.transactions
WHERE kind = 'WIN' AND status = 'OWED';

-- breaks in the chain of balances the wallet reported: between two consecutive reported
-- balances of a player, the change must equal what the events between them moved. A
-- DebitCancelled restarts the chain (whether its debit had been applied is the wallet's
-- knowledge, not the journal's).
CREATE VIEW {schema}.balance_chain_gaps AS
WITH moves AS (
    SELECT operator_id, player_id, currency, event_id, event_type, occurred_at, "offset",
           balance,
           CASE event_type
               WHEN 'BetAccepted' THEN -amount
               WHEN 'WinCredited' THEN amount
               WHEN 'BetRolledBack' THEN amount
               ELSE 0
           END AS delta
    FROM {schema}.journal
    WHERE balance IS NOT NULL AND currency IS NOT NULL
), chained AS (
    SELECT *,
           lag(balance) OVER w AS previous_balance,
           lag(event_id) OVER w AS previous_event_id
    FROM moves
    -- a player's events share one partition (key operator:player): offsets order them
    WINDOW w AS (PARTITION BY operator_id, player_id, currency ORDER BY "offset")
)
SELECT operator_id, player_id, currency, previous_event_id, event_id, event_type,
       previous_balance, delta, balance, balance - (previous_balance + delta) AS gap,
       occurred_at
FROM chained
WHERE previous_balance IS NOT NULL
  AND event_type <> 'DebitCancelled'
  AND balance <> previous_balance + delta;

-- per provider and UTC day: the totals a provider's own report should show
CREATE VIEW {schema}.provider_daily_totals AS
SELECT provider_id, day, currency,
       sum(bets) AS bets, sum(wins) AS wins, sum(refunds) AS refunds, sum(ggr) AS ggr
FROM {schema}.revenue_daily
GROUP BY provider_id, day, currency;

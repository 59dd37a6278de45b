-- Transfer wallets: an operator moves funds into a balance the aggregator holds for its
-- player (FundsTransferred, direction IN) and out of it (OUT); play is decided against that
-- balance (money events with payload wallet 'transfer'). Transfers are rows of the ledger
-- (transactions: kind DEPOSIT or WITHDRAW, provider_id ''), and the balance each event
-- reports is the held balance, so the chain of balances counts the transfers' moves too.
CREATE OR REPLACE VIEW {schema}.balance_chain_gaps AS
WITH moves AS (
    SELECT operator_id, player_id, currency, event_id, event_type, occurred_at, "offset",
           balance,
           CASE event_type
               WHEN 'BetAccepted' THEN -amount
               WHEN 'WinCredited' THEN amount
               WHEN 'BetRolledBack' THEN amount
               WHEN 'FundsTransferred' THEN
                   CASE payload->>'direction' WHEN 'IN' THEN amount ELSE -amount END
               ELSE 0
           END AS delta
    FROM {schema}.journal
    WHERE balance IS NOT NULL AND currency IS NOT NULL
      AND coalesce(payload->>'mode', 'real') = 'real'
), chained AS (
    SELECT *,
           lag(balance) OVER w AS previous_balance,
           lag(event_id) OVER w AS previous_event_id
    FROM moves
    WINDOW w AS (PARTITION BY operator_id, player_id, currency ORDER BY "offset")
)
SELECT operator_id, player_id, currency, previous_event_id, event_id, event_type,
       previous_balance, delta, balance, balance - (previous_balance + delta) AS gap,
       occurred_at
FROM chained
WHERE previous_balance IS NOT NULL
  AND event_type <> 'DebitCancelled'
  AND balance <> previous_balance + delta;

-- Per operator, UTC day, currency and direction: what the journal says was transferred
-- (reconciled against the operator's own record of its debits and credits).
CREATE OR REPLACE VIEW {schema}.transfers_daily AS
SELECT operator_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, currency,
       payload->>'direction' AS direction, count(*) AS transfers, sum(amount) AS amount
FROM {schema}.journal
WHERE event_type = 'FundsTransferred'
GROUP BY 1, 2, 3, 4;

ALTER TABLE {schema}.transactions DROP CONSTRAINT transactions_kind_check;
ALTER TABLE {schema}.transactions ADD CONSTRAINT transactions_kind_check
    CHECK (kind IN ('BET', 'WIN', 'ROLLBACK', 'DEPOSIT', 'WITHDRAW'));

-- Demo play: the journal keeps every demo event (payload mode 'demo'), but demo play is not
-- money. It is left out of the ledger (transactions, transaction_changes), rounds, revenue
-- (GGR) and the real balances; the demo balance each event reports is kept apart here.
CREATE TABLE {schema}.demo_balances (
    operator_id text        NOT NULL,
    player_id   text        NOT NULL,
    currency    char(3)     NOT NULL,
    balance     bigint      NOT NULL,
    event_id    text        NOT NULL,
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (operator_id, player_id, currency)
);

-- the chain of balances the operators' wallets reported: real play only (a demo event's
-- balance is the aggregator's demo balance, not the wallet's)
CREATE OR REPLACE VIEW {schema}.balance_chain_gaps AS
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

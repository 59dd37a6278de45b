-- Decisions in the journal that contradict each other. The saga decides each attempt once,
-- so none of these can come from a correct run; each row is one transaction (or one debit
-- attempt) of one player, the contradiction named, and its events in journal order.
--
-- A provider may reuse a transaction id for another player or operator: the key is
-- (operator, player, provider, transaction). Which events contradict:
--   one debit attempt (one DEBIT command id) with more than one of: BetAccepted, BetRejected,
--     DebitTimedOut/DebitCancelled (a timed-out or failed debit is compensated, never also
--     accepted; a refused one is final);
--   one bet accepted and also rejected (under any attempts);
--   one bet accepted by more than one debit attempt (debited twice);
--   one bet refunded (BetRolledBack) more than once, or refunded without being accepted;
--   one bet accepted while a rollback of it was recorded as of an unknown bet (a tombstone:
--     the bet must then be refused, and no refund was made);
--   one win credited (WinCredited) more than once, under different command/event ids;
--   one transaction journaled as a bet and as a win;
--   one transaction whose events disagree on its amount or currency.
-- Demo play (payload mode 'demo') is not money and is left out.
CREATE VIEW {schema}.contradictory_decisions AS
WITH money AS (
    SELECT operator_id, player_id, provider_id, transaction_id, event_type, event_id,
           payload->>'command_id' AS command_id, amount, currency, occurred_at, "offset",
           event_type || ':' || event_id AS label
    FROM {schema}.journal
    WHERE transaction_id IS NOT NULL AND coalesce(payload->>'mode', 'real') = 'real'
      AND event_type IN ('BetAccepted', 'BetRejected', 'DebitTimedOut', 'DebitCancelled',
                         'BetRolledBack', 'WinCredited', 'CreditOwed')
), attempts AS (
    SELECT operator_id, player_id, provider_id, transaction_id, command_id,
           count(*) FILTER (WHERE event_type = 'BetAccepted') AS accepted,
           count(*) FILTER (WHERE event_type = 'BetRejected') AS rejected,
           count(*) FILTER (WHERE event_type IN ('DebitTimedOut', 'DebitCancelled')) AS cancelled,
           string_agg(label, ' ' ORDER BY "offset") AS events,
           max(occurred_at) AS last_at
    FROM money
    WHERE command_id IS NOT NULL
      AND event_type IN ('BetAccepted', 'BetRejected', 'DebitTimedOut', 'DebitCancelled')
    GROUP BY operator_id, player_id, provider_id, transaction_id, command_id
), tombstones AS (
    SELECT DISTINCT operator_id, player_id, provider_id,
           payload->>'reference_transaction_id' AS transaction_id
    FROM {schema}.journal
    WHERE event_type = 'RollbackRecorded' AND (payload->>'bet_known')::boolean IS FALSE
      AND coalesce(payload->>'mode', 'real') = 'real'
), txns AS (
    SELECT m.operator_id, m.player_id, m.provider_id, m.transaction_id,
           count(*) FILTER (WHERE event_type = 'BetAccepted') AS accepted,
           count(*) FILTER (WHERE event_type = 'BetRejected') AS rejected,
           count(*) FILTER (WHERE event_type = 'BetRolledBack') AS refunded,
           count(*) FILTER (WHERE event_type = 'WinCredited') AS credited,
           bool_or(event_type IN ('BetAccepted', 'BetRejected', 'DebitTimedOut',
                                  'DebitCancelled', 'BetRolledBack')) AS as_bet,
           bool_or(event_type IN ('WinCredited', 'CreditOwed')) AS as_win,
           count(DISTINCT (amount, currency)) AS amounts,
           string_agg(label, ' ' ORDER BY "offset") AS events,
           max(occurred_at) AS last_at
    FROM money m
    GROUP BY m.operator_id, m.player_id, m.provider_id, m.transaction_id
)
SELECT operator_id, player_id, provider_id, transaction_id, command_id,
       'one debit attempt both ' || concat_ws(' and ',
           CASE WHEN accepted > 0 THEN 'accepted' END,
           CASE WHEN rejected > 0 THEN 'rejected' END,
           CASE WHEN cancelled > 0 THEN 'timed out/cancelled' END) AS contradiction,
       events, last_at
FROM attempts
WHERE (accepted > 0)::int + (rejected > 0)::int + (cancelled > 0)::int > 1
UNION ALL
SELECT operator_id, player_id, provider_id, transaction_id, NULL, c.contradiction, events,
       last_at
FROM txns t
CROSS JOIN LATERAL (VALUES
    (t.accepted > 0 AND t.rejected > 0, 'bet both accepted and rejected'),
    (t.accepted > 1, 'bet accepted by ' || t.accepted || ' debit attempts (debited twice)'),
    (t.refunded > 1, 'bet refunded ' || t.refunded || ' times'),
    (t.refunded > 0 AND t.accepted = 0, 'bet refunded without being accepted'),
    (t.accepted > 0 AND EXISTS (
        SELECT 1 FROM tombstones s
        WHERE s.operator_id = t.operator_id AND s.player_id = t.player_id
          AND s.provider_id = t.provider_id AND s.transaction_id = t.transaction_id),
     'bet accepted and its rollback recorded as of an unknown bet (no refund)'),
    (t.credited > 1, 'win credited ' || t.credited || ' times under different ids'),
    (t.as_bet AND t.as_win, 'transaction journaled both as a bet and as a win'),
    (t.amounts > 1, 'events disagree on the amount or currency')
) AS c(found, contradiction)
WHERE c.found;

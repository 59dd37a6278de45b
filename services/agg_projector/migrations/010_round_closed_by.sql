-- How a closed round was closed: PROVIDER (the provider's flag or end-round call: RoundClosed)
-- or AUTO (the provider's auto-close policy after its idle time: RoundAutoClosed). Rounds
-- closed before the policy existed were all closed by their provider.
ALTER TABLE {schema}.rounds ADD COLUMN closed_by text CHECK (closed_by IN ('PROVIDER', 'AUTO'));
UPDATE {schema}.rounds SET closed_by = 'PROVIDER' WHERE status = 'CLOSED';

-- money settled for a round after it closed (a win or a refund owed for it, a bet whose
-- debit was in flight at the close): accepted and counted in the round's totals, listed here
-- for the auditor; the close event's totals are those at the close
CREATE VIEW {schema}.round_money_after_close AS
SELECT t.operator_id, t.provider_id, t.player_id, t.round_id, r.closed_by, r.closed_at,
       t.transaction_id, t.kind, t.status, t.amount, t.currency, t.first_event_at
FROM {schema}.transactions t
JOIN {schema}.rounds r
  ON r.operator_id = t.operator_id AND r.provider_id = t.provider_id
 AND r.player_id = t.player_id AND r.round_id = t.round_id
WHERE r.status = 'CLOSED'
  AND t.first_event_at > r.closed_at
  AND ((t.kind = 'WIN' AND t.status IN ('CREDITED', 'OWED'))
       OR (t.kind = 'ROLLBACK' AND t.status = 'REFUNDED')
       OR (t.kind = 'BET' AND t.status = 'ACCEPTED'));

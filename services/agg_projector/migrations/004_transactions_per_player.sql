-- A provider's transaction ids are its own: the same id may come for several players of one
-- operator (as round ids do, 003). A transaction is the player's, as the saga keeps it: its
-- row, its changes and the bet a rollback names are looked up with the player.
ALTER TABLE {schema}.transactions DROP CONSTRAINT transactions_pkey;
ALTER TABLE {schema}.transactions
    ADD PRIMARY KEY (operator_id, provider_id, player_id, transaction_id);

-- every change row has its event in the journal (written in the same transaction)
ALTER TABLE {schema}.transaction_changes ADD COLUMN player_id text;
UPDATE {schema}.transaction_changes c SET player_id = j.player_id
FROM {schema}.journal j WHERE j.event_id = c.event_id;
ALTER TABLE {schema}.transaction_changes ALTER COLUMN player_id SET NOT NULL;
CREATE INDEX ON {schema}.transaction_changes (operator_id, player_id, provider_id, transaction_id);
DROP INDEX IF EXISTS {schema}.transaction_changes_operator_id_provider_id_transaction_id_idx;

CREATE OR REPLACE VIEW {schema}.rollback_tombstones AS
SELECT r.operator_id, r.provider_id, r.transaction_id AS rollback_transaction_id,
       r.reference_transaction_id AS bet_transaction_id, r.player_id, r.updated_at,
       b.status AS bet_status,
       (b.transaction_id IS NOT NULL) AS bet_arrived_later
FROM {schema}.transactions r
LEFT JOIN {schema}.transactions b
       ON b.operator_id = r.operator_id AND b.provider_id = r.provider_id
      AND b.player_id = r.player_id
      AND b.transaction_id = r.reference_transaction_id AND b.kind = 'BET'
WHERE r.kind = 'ROLLBACK' AND r.status = 'TOMBSTONE';

-- A provider's round id may be shared by several players (a live table's spin): a round's
-- totals are kept per player, as the saga keeps them.
ALTER TABLE {schema}.rounds DROP CONSTRAINT rounds_pkey;
ALTER TABLE {schema}.rounds ADD PRIMARY KEY (operator_id, provider_id, player_id, round_id);

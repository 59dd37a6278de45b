-- Why a bet was refused: the rule of its BetRejected (a compliance rule such as
-- game_restricted_in_country:GB or max_bet:EUR:500, the wallet's operator_wallet:<status>,
-- rolled_back). On a transaction it is the rule of its current status (NULL unless that
-- status is a rejection); on a change, the rule of that event. NULL for events written
-- before BetRejected carried a rule (the journal's payload then holds none either).
ALTER TABLE {schema}.transactions ADD COLUMN rule text;
ALTER TABLE {schema}.transaction_changes ADD COLUMN rule text;

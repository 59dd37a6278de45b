-- Responsible gaming: each player's controls as the operator last stated them (the latest
-- PlayerControlsChanged of the player in the journal; the saga enforces them, this is what
-- the read API shows). A view of the journal, so a replay rebuilds it with the journal.
CREATE INDEX journal_player_controls_idx ON {schema}.journal
    (operator_id, player_id, occurred_at DESC, "offset" DESC)
    WHERE event_type = 'PlayerControlsChanged';

CREATE OR REPLACE VIEW {schema}.player_controls AS
SELECT DISTINCT ON (operator_id, player_id)
       operator_id, player_id,
       payload->>'change_id'                        AS change_id,
       payload->>'actor'                            AS actor,
       (payload->>'blocked')::boolean               AS blocked,
       (payload->>'self_excluded')::boolean         AS self_excluded,
       (payload->>'self_excluded_until')::timestamptz AS self_excluded_until,
       (payload->>'session_time_limit_s')::bigint   AS session_time_limit_s,
       payload->>'limits'                           AS limits,
       occurred_at                                  AS changed_at,
       event_id
FROM {schema}.journal
WHERE event_type = 'PlayerControlsChanged'
ORDER BY operator_id, player_id, occurred_at DESC, "offset" DESC;

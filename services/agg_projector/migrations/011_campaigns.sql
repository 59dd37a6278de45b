-- Free-spin campaigns an operator granted its players (CampaignGranted), as the saga holds
-- them: spins left after each free spin (FreeSpinPlayed) and each spin given back
-- (FreeSpinRolledBack), the state (ACTIVE, USED_UP, CANCELLED by CampaignCancelled, EXPIRED by
-- CampaignExpired) and the bonus wins credited for the campaign's spins (WinCredited naming
-- the campaign). The free spins themselves are ledger rows (transactions, kind BET, status
-- FREE_SPIN or FREE_SPIN_ROLLED_BACK) that move no money and count in no revenue.
CREATE TABLE {schema}.campaigns (
    operator_id   text NOT NULL,
    player_id     text NOT NULL,
    campaign_id   text NOT NULL,
    provider_id   text NOT NULL,
    games         text[] NOT NULL,
    spins         integer NOT NULL CHECK (spins > 0),
    spins_left    integer NOT NULL CHECK (spins_left >= 0 AND spins_left <= spins),
    bet_value     bigint NOT NULL CHECK (bet_value > 0),
    currency      text NOT NULL,
    expires_at    timestamptz NOT NULL,
    state         text NOT NULL CHECK (state IN ('ACTIVE', 'USED_UP', 'CANCELLED', 'EXPIRED')),
    wallet        text NOT NULL,
    wins          integer NOT NULL DEFAULT 0,
    win_total     bigint NOT NULL DEFAULT 0,
    granted_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    updated_at    timestamptz NOT NULL,
    last_event_id text NOT NULL,
    PRIMARY KEY (operator_id, player_id, campaign_id)
);

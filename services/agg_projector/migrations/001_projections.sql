-- Projections of the journal (agg.events). {schema} is the target schema: the live one, or
-- a fresh one that a replay rebuilds and compares. Money is bigint minor units.

CREATE TABLE {schema}.consumer_offsets (
    consumer_group text   NOT NULL,
    topic          text   NOT NULL,
    partition      int    NOT NULL,
    next_offset    bigint NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- every journal event once (event_id is derived from its cause: a republished event has the
-- same id), with where it was read; the dedupe of the projector and the auditors' index
CREATE TABLE {schema}.journal (
    event_id       text        PRIMARY KEY,
    event_type     text        NOT NULL,
    operator_id    text        NOT NULL,
    player_id      text        NOT NULL,
    provider_id    text        NOT NULL,
    correlation_id text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    transaction_id text,
    round_id       text,
    amount         bigint,
    currency       text,
    balance        bigint,
    partition      int         NOT NULL,
    "offset"       bigint      NOT NULL,
    payload        jsonb       NOT NULL
);
CREATE INDEX ON {schema}.journal (operator_id, player_id, occurred_at);
CREATE INDEX ON {schema}.journal (provider_id, transaction_id);

-- the transaction ledger: one row per provider transaction, its latest state
CREATE TABLE {schema}.transactions (
    operator_id      text        NOT NULL,
    provider_id      text        NOT NULL,
    transaction_id   text        NOT NULL,
    player_id        text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('BET', 'WIN', 'ROLLBACK')),
    status           text        NOT NULL,
    amount           bigint      NOT NULL CHECK (amount >= 0),
    currency         char(3)     NOT NULL,
    round_id         text,
    game_id          text,
    reference_transaction_id text,
    first_event_at   timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_event_id    text        NOT NULL,
    PRIMARY KEY (operator_id, provider_id, transaction_id)
);
CREATE INDEX ON {schema}.transactions (operator_id, player_id, updated_at);
CREATE INDEX ON {schema}.transactions (operator_id, round_id);

-- every state change of every transaction, timestamped
CREATE TABLE {schema}.transaction_changes (
    event_id       text        PRIMARY KEY,
    operator_id    text        NOT NULL,
    provider_id    text        NOT NULL,
    transaction_id text        NOT NULL,
    status         text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    correlation_id text        NOT NULL
);
CREATE INDEX ON {schema}.transaction_changes (operator_id, provider_id, transaction_id);

CREATE TABLE {schema}.rounds (
    operator_id  text        NOT NULL,
    provider_id  text        NOT NULL,
    round_id     text        NOT NULL,
    player_id    text        NOT NULL,
    game_id      text,
    currency     char(3)     NOT NULL,
    bet_total    bigint      NOT NULL DEFAULT 0,
    win_total    bigint      NOT NULL DEFAULT 0,
    refund_total bigint      NOT NULL DEFAULT 0,
    status       text        NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED')),
    opened_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    closed_at    timestamptz,
    PRIMARY KEY (operator_id, provider_id, round_id)
);

-- the last balance the operator's wallet reported, and the event that reported it
CREATE TABLE {schema}.balances (
    operator_id text        NOT NULL,
    player_id   text        NOT NULL,
    currency    char(3)     NOT NULL,
    balance     bigint      NOT NULL,
    event_id    text        NOT NULL,
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (operator_id, player_id, currency)
);

CREATE TABLE {schema}.sessions (
    session_id  text        PRIMARY KEY,
    operator_id text        NOT NULL,
    player_id   text        NOT NULL,
    provider_id text        NOT NULL,
    game_id     text        NOT NULL,
    currency    char(3)     NOT NULL,
    country     char(2)     NOT NULL,
    mode        text        NOT NULL,
    opened_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ON {schema}.sessions (operator_id, player_id);

-- gross gaming revenue per operator / provider / game / currency / UTC day
CREATE TABLE {schema}.revenue_daily (
    operator_id text   NOT NULL,
    provider_id text   NOT NULL,
    game_id     text   NOT NULL,
    currency    char(3) NOT NULL,
    day         date   NOT NULL,
    bets        bigint NOT NULL DEFAULT 0,
    wins        bigint NOT NULL DEFAULT 0,
    refunds     bigint NOT NULL DEFAULT 0,
    ggr         bigint GENERATED ALWAYS AS (bets - wins - refunds) STORED,
    PRIMARY KEY (operator_id, provider_id, game_id, currency, day)
);

-- What the gateway sent each end user lately, so a client that reconnects after a short
-- disconnect gets what it missed (docs/realtime.md, "Reconnecting and missed events").
-- `realtime_feeds` holds each user's last offset (`head`, dense from 1) and an `epoch` drawn when
-- the row is made, so an offset of another user or of a deleted and re-created one is told
-- apart. Updating `head` locks the row until the change commits: a user's offsets commit in
-- order. `realtime_events` keeps each event as sent, for the recovery window only (pruned by
-- `created_ms`). Both go with their user.

CREATE TABLE realtime_feeds (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    head BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE realtime_events (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, seq)
);
CREATE INDEX realtime_events_age ON realtime_events (created_ms);

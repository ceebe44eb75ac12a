-- Stream sessions (docs/realtime.md): each RTMP publish of a live stream, opened and closed by
-- the leader from the cluster's view, with the viewer figures it samples each second, and the
-- signed-in viewers who got a playback token while it was open. Tips and pay-per-view revenue
-- are not copied here: they are read from the ledger over the session's time window (from
-- started_ms to closed_ms, or now while open).

CREATE TABLE stream_sessions (
    -- Time-ordered ids (secrets::new_time_id): newest first is ORDER BY id DESC.
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    -- The stream's creator when the session opened (whose tips count), if it had one.
    creator_id TEXT,
    started_ms BIGINT NOT NULL,
    -- NULL while the session is open; then the last time the stream was seen on the air.
    ended_ms BIGINT,
    -- When the leader closed it (ended_ms + the grace, or later): tips and purchases up to
    -- here count, since the session was open until then.
    closed_ms BIGINT,
    peak_viewers BIGINT NOT NULL DEFAULT 0,
    -- Viewer-milliseconds: the sampled viewer counts integrated over time.
    viewer_ms BIGINT NOT NULL DEFAULT 0,
    -- When the leader last sampled the viewers (the next sample integrates from here; an
    -- UPDATE conditional on it keeps two leaders from counting one interval twice).
    sampled_ms BIGINT NOT NULL,
    -- When the stream was last seen on the air (a session off the air for a grace is closed).
    on_air_ms BIGINT NOT NULL
);
CREATE INDEX stream_sessions_stream ON stream_sessions (tenant_id, stream_id, id);
-- At most one open session per stream, whatever the number of leaders at a time.
CREATE UNIQUE INDEX stream_sessions_open ON stream_sessions (stream_id) WHERE ended_ms IS NULL;

-- Signed-in users who got a playback token (POST /v1/me/streams/{id}/playback) during a
-- session: its unique viewers.
CREATE TABLE stream_session_viewers (
    session_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    first_ms BIGINT NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

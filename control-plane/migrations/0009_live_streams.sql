-- Live video streams of tenants, published over RTMP with a stream key to the node the
-- scheduler places them on, and watched over HLS. Nodes report where publishers reach their
-- RTMP listener.

CREATE TABLE live_streams (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    stream_key TEXT NOT NULL UNIQUE,
    -- 'public', or 'token': viewers need a playback token signed with playback_secret.
    access TEXT NOT NULL,
    playback_secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX live_streams_tenant ON live_streams (tenant_id, id);

ALTER TABLE nodes ADD COLUMN rtmp_url TEXT NOT NULL DEFAULT '';

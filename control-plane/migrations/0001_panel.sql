-- Panel objects: plans, tenants, API keys, stations with their mounts, nodes.
-- Written once for SQLite and PostgreSQL: TEXT ids, BIGINT numbers and flags (0/1), times as
-- unix seconds, so the same queries run on both through sqlx's Any driver.

CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    max_stations BIGINT NOT NULL,
    max_mounts_per_station BIGINT NOT NULL,
    allowed_formats TEXT NOT NULL,
    max_bitrate_kbps BIGINT NOT NULL,
    max_listeners_per_station BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    max_live_streams BIGINT NOT NULL,
    feature_autodj BIGINT NOT NULL,
    feature_scheduling BIGINT NOT NULL,
    feature_hls BIGINT NOT NULL,
    feature_live_video BIGINT NOT NULL,
    currency TEXT NOT NULL,
    monthly_micros BIGINT NOT NULL,
    overage_per_gb_micros BIGINT NOT NULL,
    overage_per_listener_hour_micros BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    plan_id TEXT NOT NULL REFERENCES plans (id),
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE stations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    genre TEXT NOT NULL,
    autodj_enabled BIGINT NOT NULL,
    max_listeners BIGINT NOT NULL,
    source_password TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX stations_tenant ON stations (tenant_id, id);

CREATE TABLE mounts (
    station_id TEXT NOT NULL REFERENCES stations (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    bitrate_kbps BIGINT NOT NULL,
    PRIMARY KEY (station_id, path)
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    labels TEXT NOT NULL,
    public_url TEXT NOT NULL,
    capacity_listeners BIGINT NOT NULL,
    capacity_mbps BIGINT NOT NULL,
    status TEXT NOT NULL,
    last_heartbeat_at BIGINT,
    created_at BIGINT NOT NULL
);

-- The three plans of the hosting offer we target. Admins may edit or delete them.
-- Prices in micro-units: 4.99 USD = 4990000. GB are 10^9 bytes.
INSERT INTO plans VALUES
    ('plan_basic', 'Basic', 'One station, one 64 kbps mount, 50 listeners, AutoDJ.',
     1, 1, 'mp3,aac', 64, 50, 10000000000, 0,
     1, 0, 0, 0,
     'USD', 4990000, 50000, 2000, 0, 0),
    ('plan_standard', 'Standard', 'Two mounts up to 128 kbps, 100 listeners, AutoDJ with scheduling.',
     2, 2, 'mp3,aac', 128, 100, 30000000000, 0,
     1, 1, 0, 0,
     'USD', 9990000, 40000, 1500, 0, 0),
    ('plan_premium', 'Premium', 'Three mounts up to 320 kbps, 200 listeners, every feature including HLS and live video.',
     5, 3, 'mp3,aac,opus', 320, 200, 50000000000, 2,
     1, 1, 1, 1,
     'USD', 19990000, 30000, 1000, 0, 0);

-- The media library: audio files uploaded to a station. The bytes live once per content in the
-- media store (a blob named by its SHA-256), so a row is a station's reference to a blob; the
-- blob is removed when the last row naming its sha256 goes. `search_text` is artist, title,
-- album and filename lowercased by the control plane, so `?q=` is case-insensitive for every
-- script on both backends.

CREATE TABLE media_files (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    station_id TEXT NOT NULL REFERENCES stations (id),
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    filename TEXT NOT NULL,
    artist TEXT NOT NULL,
    title TEXT NOT NULL,
    album TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    codec TEXT NOT NULL,
    bitrate_kbps BIGINT NOT NULL,
    search_text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (station_id, sha256)
);
CREATE INDEX media_files_station ON media_files (station_id, id);
CREATE INDEX media_files_tenant ON media_files (tenant_id);
CREATE INDEX media_files_sha256 ON media_files (sha256);

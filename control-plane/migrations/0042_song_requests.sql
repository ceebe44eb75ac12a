-- Song requests (README "Song requests"): listeners ask a station's AutoDJ for tracks of its
-- library. A plan includes them (`feature_requests`: the Standard and Premium seed plans); a
-- station turns them on and sets its gaps and its limit per listener address. `song_requests`
-- is the queue and its record: a request is pending until the origin node reports it playing
-- (`played`) or the tenant clears it (`cleared`). The listener's address is kept only as a
-- keyed hash. The artist and title are the media file's when requested, so the record stays
-- readable after the file changes or goes. `song_history.request_id` marks the plays that were
-- requests.

ALTER TABLE plans ADD COLUMN feature_requests BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET feature_requests = 1 WHERE id IN ('plan_standard', 'plan_premium');

ALTER TABLE stations ADD COLUMN requests_enabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stations ADD COLUMN request_track_gap_minutes BIGINT NOT NULL DEFAULT 60;
ALTER TABLE stations ADD COLUMN request_artist_gap_minutes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stations ADD COLUMN request_ip_limit BIGINT NOT NULL DEFAULT 2;
ALTER TABLE stations ADD COLUMN request_ip_minutes BIGINT NOT NULL DEFAULT 10;

ALTER TABLE song_history ADD COLUMN request_id TEXT;

CREATE TABLE song_requests (
    id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    media_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    artist TEXT NOT NULL,
    title TEXT NOT NULL,
    client_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    played_at_ms BIGINT
);
CREATE INDEX song_requests_station ON song_requests (station_id, requested_at_ms);
CREATE INDEX song_requests_state ON song_requests (state, station_id, requested_at_ms);
CREATE INDEX song_requests_client ON song_requests (station_id, client_hash, requested_at_ms);
-- The requestable library asks, per file, which kinds of playlist hold it.
CREATE INDEX playlist_items_media ON playlist_items (media_id);

-- What each station played: AutoDJ tracks and live shows, as the station's origin node reported
-- them. A node repeats its current track after a reconnect; (station, start) keeps it once.

CREATE TABLE song_history (
    station_id TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    title TEXT NOT NULL,
    artist TEXT NOT NULL,
    track_title TEXT NOT NULL,
    media_sha256 TEXT,
    duration_ms BIGINT,
    live BIGINT NOT NULL DEFAULT 0,
    streamer TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (station_id, started_at_ms)
);

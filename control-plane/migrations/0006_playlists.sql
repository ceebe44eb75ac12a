-- AutoDJ playlists and schedules, and per-station AutoDJ settings. Items name media files;
-- an item whose file was deleted is ignored.

CREATE TABLE playlists (
    id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    play_order TEXT NOT NULL,
    weight BIGINT NOT NULL,
    days TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    every_songs BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX playlists_station_name ON playlists (station_id, name);

CREATE TABLE playlist_items (
    playlist_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    media_id TEXT NOT NULL,
    PRIMARY KEY (playlist_id, position)
);

CREATE TABLE station_autodj (
    station_id TEXT PRIMARY KEY,
    timezone TEXT NOT NULL,
    crossfade_ms BIGINT NOT NULL DEFAULT 0
);

-- Live DJ (streamer) accounts: who may go live on a station's live mount. Passwords are kept as
-- Argon2 hashes; nodes receive only the hashes.

CREATE TABLE streamers (
    id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX streamers_station_username ON streamers (station_id, username);

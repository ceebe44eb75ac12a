-- Cover art (README "Station pages"): the picture embedded in an uploaded file (ID3 APIC, FLAC
-- and Vorbis pictures), scaled to 500 and 100 px JPEGs at upload and kept once per content
-- hash (the hash of the 500 px JPEG), in the database so every replica serves it. A media file
-- and a station's default picture name their art by that hash.

CREATE TABLE cover_art (
    sha256 TEXT PRIMARY KEY,
    large BYTEA NOT NULL,
    small BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE media_files ADD COLUMN art_sha256 TEXT;
ALTER TABLE stations ADD COLUMN art_sha256 TEXT;

-- A station may prefer HLS for its web player (docs/hls-audio.md): the now-playing JSON says so
-- (`station.hls_preferred`), and the player then plays the mount's `hls_url` even where the
-- browser could stream MP3 or AAC itself. Off for every existing station.

ALTER TABLE stations ADD COLUMN hls_preferred BIGINT NOT NULL DEFAULT 0;

-- What the AutoDJ's renditions of a media file take on the edge: its playing time at the
-- bitrates of its station's mounts (one rendition per distinct format and bitrate). Counted in
-- the tenant's storage with the file's own bytes, so a small upload that decodes to hours of
-- audio is charged for what it makes. Kept up to date when the station's mounts change.

ALTER TABLE media_files ADD COLUMN rendition_bytes BIGINT NOT NULL DEFAULT 0;

UPDATE media_files SET rendition_bytes = duration_ms * COALESCE((
    SELECT SUM(m.bitrate_kbps) FROM mounts m
    WHERE m.station_id = media_files.station_id
      AND NOT EXISTS (
          SELECT 1 FROM mounts o
          WHERE o.station_id = m.station_id AND o.format = m.format
            AND o.bitrate_kbps = m.bitrate_kbps AND o.position < m.position)
), 0) / 8;

-- The ABR ladder a plan gives its live streams: JSON, [{"height": 480, "video_kbps": 1200}, ...].
ALTER TABLE plans ADD COLUMN live_renditions TEXT NOT NULL DEFAULT '[]';

-- Presence rows count a user's sockets on a replica: increments and decrements commute, so a
-- connect and a disconnect handled out of order still leave the right count.

ALTER TABLE realtime_presence ADD COLUMN sockets BIGINT NOT NULL DEFAULT 1;

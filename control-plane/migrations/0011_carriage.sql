-- What each node was told to carry, and when: one row per (node, station or live stream) and
-- stretch of time, opened by the leader before it writes a desired state naming the object and
-- closed once a desired state no longer names it (until_ms NULL: still carried). Usage reports
-- are accepted only for objects the reporting node carried during the report's period. Times
-- are the control plane's unix milliseconds.
CREATE TABLE carriage (
    node_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    until_ms BIGINT,
    PRIMARY KEY (node_id, subject_id, since_ms)
);
CREATE INDEX carriage_open ON carriage (node_id, until_ms);

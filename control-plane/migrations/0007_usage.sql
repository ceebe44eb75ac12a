-- Usage reports from nodes. A node numbers its reports (seq, per node, never reused) and resends
-- each until it is acknowledged; (node_id, seq) stores a report once however often it arrives.
-- Times are unix milliseconds; a report covers [period_start_ms, period_end_ms) on the node's
-- clock. One usage_mounts row per station mount the node served in the period; tenant_id is
-- copied at ingest so billing survives a station's deletion.

CREATE TABLE usage_reports (
    node_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, seq)
);

CREATE TABLE usage_mounts (
    node_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    station_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    mount TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    listener_ms BIGINT NOT NULL,
    peak_listeners BIGINT NOT NULL,
    sessions BIGINT NOT NULL,
    bytes_sent BIGINT NOT NULL,
    PRIMARY KEY (node_id, seq, station_id, mount)
);
CREATE INDEX usage_mounts_station ON usage_mounts (station_id, period_end_ms);
CREATE INDEX usage_mounts_tenant ON usage_mounts (tenant_id, period_end_ms);

-- Presence over every control-plane replica: each replica heartbeats its row, and lists the users
-- with a connection to it. A replica that stops heartbeating (killed) is swept by the others, and
-- its users go offline for everyone unless they are connected elsewhere.

CREATE TABLE realtime_replicas (
    id TEXT PRIMARY KEY,
    heartbeat_ms BIGINT NOT NULL
);

CREATE TABLE realtime_presence (
    replica_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, replica_id)
);
CREATE INDEX realtime_presence_replica ON realtime_presence (replica_id);

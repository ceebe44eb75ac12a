-- Each handshake checks the tenant's sockets against its plan's max_realtime_connections under
-- the tenant's row lock. Summing realtime_presence (one row per connected user and replica)
-- made that check grow with the tenant's users, and at 10,000 users a reconnect storm queued
-- past the pool's timeout. This table keeps one count per tenant and replica, maintained with
-- the presence rows, so the check reads as many rows as there are replicas.
CREATE TABLE realtime_tenant_sockets (
    tenant_id TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    sockets BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, replica_id)
);
CREATE INDEX realtime_tenant_sockets_replica ON realtime_tenant_sockets (replica_id);
INSERT INTO realtime_tenant_sockets (tenant_id, replica_id, sockets)
    SELECT tenant_id, replica_id, SUM(sockets) FROM realtime_presence
    GROUP BY tenant_id, replica_id;

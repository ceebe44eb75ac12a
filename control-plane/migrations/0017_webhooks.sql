-- Webhooks to a tenant's backend. An event is written (with one delivery row per endpoint that
-- wants it) in the same transaction as the change it reports, so a committed change always has
-- its event and a rolled-back one never does. Deliveries are claimed by a lease, so replicas
-- never send the same attempt at once. Times are unix milliseconds.

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    url TEXT NOT NULL,
    -- JSON list of event types; ["*"] is every type.
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    disabled BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- The event's `data`, JSON.
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    -- pending | delivered | failed
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    -- A replica sending an attempt holds the row until then; 0 when no one does.
    lease_until_ms BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    delivered_ms BIGINT,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_ms);

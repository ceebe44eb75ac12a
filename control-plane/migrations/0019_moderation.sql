-- Blocks between a tenant's end users, and abuse reports with a snapshot of what was reported
-- (the message may be edited or deleted afterwards; the report keeps what the reporter saw).

CREATE TABLE user_blocks (
    tenant_id TEXT NOT NULL,
    blocker_id TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, blocker_id, blocked_id)
);

CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    reporter_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- The reported message as JSON, as it was when reported.
    snapshot TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX reports_tenant ON reports (tenant_id, id);

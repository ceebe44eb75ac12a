-- Relayed TURN bytes (docs/calls.md "Metering"): each node's agent reads its coturn's session
-- usage lines and reports, per tenant, the bytes its relay received from and sent to the
-- tenant's end users (rb + sb of the `usage:` lines) in the report's period. One row per
-- tenant of a stored report (node_id, seq), written with the report's usage_reports row, so a
-- resent report adds nothing. Rows are billed like usage_mounts: invoice_id marks the
-- finalized invoice that billed them, and they outlive the tenant.
CREATE TABLE usage_turn (
    node_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    relayed_bytes BIGINT NOT NULL,
    invoice_id TEXT,
    PRIMARY KEY (node_id, seq, tenant_id)
);
CREATE INDEX usage_turn_billing ON usage_turn (tenant_id, period_start_ms);
CREATE INDEX usage_turn_node_period ON usage_turn (node_id, period_end_ms);

-- A plan includes some GB relayed a month (prorated by active days) and prices the rest per
-- GB. The Premium seed plan includes 100 GB, then 0.50 per GB (USD).
ALTER TABLE plans ADD COLUMN included_turn_gb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN overage_per_turn_gb_micros BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET included_turn_gb = 100, overage_per_turn_gb_micros = 500000
    WHERE id = 'plan_premium';

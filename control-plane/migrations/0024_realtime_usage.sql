-- Realtime plan limits and metering: concurrent Socket.io connections per tenant, and end users'
-- connection time and messages billed like listener hours (allowances prorated by active days,
-- overage per 1000).

-- Plans that existed before get 1000 connections (the API's default for a plan created without
-- the limit) and no realtime allowance or price: their realtime usage shows on invoices at 0.
ALTER TABLE plans ADD COLUMN max_realtime_connections BIGINT NOT NULL DEFAULT 1000;
ALTER TABLE plans ADD COLUMN included_connection_minutes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN overage_per_1000_connection_minutes_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN included_messages BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN overage_per_1000_messages_micros BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET max_realtime_connections = 100 WHERE id = 'plan_basic';
UPDATE plans SET max_realtime_connections = 250 WHERE id = 'plan_standard';
UPDATE plans SET max_realtime_connections = 1000, included_connection_minutes = 1000000,
    overage_per_1000_connection_minutes_micros = 20000, included_messages = 100000,
    overage_per_1000_messages_micros = 100000 WHERE id = 'plan_premium';

-- A tenant's realtime usage per UTC day (period_start_ms is the day's first millisecond):
-- connection_ms sums the time every socket of its users was connected, as each replica flushes
-- it; messages counts messages stored, each in the transaction that stored it. Writers add to
-- the day's one unbilled row (invoice_id NULL, the partial unique index); once a finalized
-- invoice marks that row, later additions start a new one, so a row is billed exactly once.
-- Rows outlive the tenant, like usage_mounts, so a deleted tenant's last month is billed.
CREATE TABLE realtime_usage (
    tenant_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    connection_ms BIGINT NOT NULL,
    messages BIGINT NOT NULL,
    invoice_id TEXT
);
CREATE UNIQUE INDEX realtime_usage_unbilled ON realtime_usage (tenant_id, period_start_ms)
    WHERE invoice_id IS NULL;
CREATE INDEX realtime_usage_billing ON realtime_usage (tenant_id, period_start_ms);

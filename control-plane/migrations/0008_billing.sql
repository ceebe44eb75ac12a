-- Billing: what plans include, each tenant's plan and status over time, invoices.

-- Monthly allowances the plan price includes (prorated by active days like the price).
ALTER TABLE plans ADD COLUMN included_gb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN included_listener_hours BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET included_gb = 250, included_listener_hours = 10000 WHERE id = 'plan_basic';
UPDATE plans SET included_gb = 750, included_listener_hours = 25000 WHERE id = 'plan_standard';
UPDATE plans SET included_gb = 2000, included_listener_hours = 60000 WHERE id = 'plan_premium';

-- A tenant's plan and status from at_ms on, until its next row: written when a tenant is
-- created, changes plan, is suspended, resumed or deleted (status 'deleted'). Billing prorates
-- by it. Rows are never removed, so a deleted tenant's last month is still billed (under the
-- name it had, kept here). Tenants that
-- existed before this migration start with their current plan and status at their creation.
CREATE TABLE tenant_history (
    tenant_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    plan_id TEXT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (tenant_id, at_ms)
);
INSERT INTO tenant_history (tenant_id, at_ms, plan_id, status, name)
    SELECT id, created_at * 1000, plan_id, status, name FROM tenants;

-- Which tenant owns a station, kept after the station is deleted, so a usage report that
-- arrives after the deletion (a node back from a partition) is still billed to its tenant.
CREATE TABLE station_owners (
    station_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL
);
INSERT INTO station_owners (station_id, tenant_id) SELECT id, tenant_id FROM stations;
UPDATE usage_mounts SET tenant_id = (SELECT o.tenant_id FROM station_owners o
    WHERE o.station_id = usage_mounts.station_id) WHERE tenant_id = '' AND EXISTS
    (SELECT 1 FROM station_owners o WHERE o.station_id = usage_mounts.station_id);

-- The finalized invoice that billed a usage row; NULL until then. A row is billed once: by its
-- own month's invoice, or, when it arrived after that one was finalized, by a later one.
ALTER TABLE usage_mounts ADD COLUMN invoice_id TEXT;
CREATE INDEX usage_mounts_billing ON usage_mounts (tenant_id, period_start_ms);

-- Months a billing run finalized: their usage that arrives later is billed on later invoices,
-- also for tenants that had no invoice that month.
CREATE TABLE billing_periods (
    period TEXT PRIMARY KEY,
    closed_at BIGINT NOT NULL
);

-- One invoice per tenant and month (period 'YYYY-MM', UTC). A draft is recomputed by each
-- billing run; a finalized invoice never changes again. `plans` is the JSON of the plans its
-- lines were priced with, frozen at finalization: late usage of the month is priced with them.
CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    tenant_name TEXT NOT NULL,
    period TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    total_micros BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finalized_at BIGINT,
    plans TEXT NOT NULL,
    UNIQUE (tenant_id, period)
);
CREATE INDEX invoices_period ON invoices (period, id);

CREATE TABLE invoice_lines (
    invoice_id TEXT NOT NULL REFERENCES invoices (id),
    position BIGINT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    usage_period TEXT NOT NULL,
    quantity TEXT NOT NULL,
    unit TEXT NOT NULL,
    unit_price_micros BIGINT NOT NULL,
    amount_micros BIGINT NOT NULL,
    PRIMARY KEY (invoice_id, position)
);

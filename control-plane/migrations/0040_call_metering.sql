-- Tenants are billed for their users' call minutes (docs/calls.md, README "Billing"): the time
-- each call charged (its units × their length) counts in the tenant's `realtime_usage` row of
-- its day, in the charge's own transaction; a plan includes some minutes a month and prices the
-- rest per 1000. The Premium seed plan includes 1,000 minutes, then 20.00 per 1000 (USD).

ALTER TABLE realtime_usage ADD COLUMN call_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN included_call_minutes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN overage_per_1000_call_minutes_micros BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET included_call_minutes = 1000, overage_per_1000_call_minutes_micros = 20000000
    WHERE id = 'plan_premium';

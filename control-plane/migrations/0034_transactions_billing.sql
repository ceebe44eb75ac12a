-- Tenants are billed for the payments their users make (docs: README "Billing"): each
-- fan-to-creator payment (a tip, a purchase, a subscription period, a call) counts in the
-- tenant's `realtime_usage` row of its day, in the payment's own transaction; a plan includes
-- some and prices the rest per 1000. The Premium seed plan includes 10,000 a month, then 5.00
-- per 1000 (USD).

ALTER TABLE realtime_usage ADD COLUMN transactions BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN included_transactions BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN overage_per_1000_transactions_micros BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET included_transactions = 10000, overage_per_1000_transactions_micros = 5000000
    WHERE id = 'plan_premium';

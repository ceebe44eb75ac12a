-- 1-to-1 calls (docs/calls.md): the plan feature `calls` (the Premium seed plan has it), the
-- creators' call settings, every call's record, and who is in a call now.
--
-- A user is in at most one call at a time: `call_parties` holds a row per party of every call
-- that has not ended, keyed by the user, so a second call of either party fails its INSERT
-- (busy) on every replica and database alike; the row goes in the transaction that ends the
-- call.
--
-- Billing is driven from the row, by any replica: unit k of an answered call starts at
-- `accepted_ms + k × unit_secs` and is charged at its start by one ledger transaction whose
-- `UPDATE calls … WHERE units_charged = k` guard lets exactly one replica charge it.
-- `next_charge_ms` is the start of the next unit, `warn_at_ms` when the caller's balance is
-- looked at again for the one-minute warning.

ALTER TABLE plans ADD COLUMN feature_calls BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET feature_calls = 1 WHERE id = 'plan_premium';

ALTER TABLE end_users ADD COLUMN available_for_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE end_users ADD COLUMN call_price_per_minute BIGINT;
-- 'minute' or 'second'.
ALTER TABLE end_users ADD COLUMN call_billing TEXT NOT NULL DEFAULT 'minute';
ALTER TABLE end_users ADD COLUMN calls_subscribers_only BIGINT NOT NULL DEFAULT 0;
ALTER TABLE end_users ADD COLUMN region TEXT;

CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    caller_id TEXT NOT NULL,
    callee_id TEXT NOT NULL,
    -- 'calling', 'ringing', 'in_progress' or 'ended'.
    state TEXT NOT NULL,
    reason TEXT,
    price_per_minute BIGINT NOT NULL,
    unit_secs BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    accepted_ms BIGINT,
    ended_ms BIGINT,
    units_charged BIGINT NOT NULL DEFAULT 0,
    amount_charged BIGINT NOT NULL DEFAULT 0,
    next_charge_ms BIGINT,
    warn_at_ms BIGINT,
    warned_ms BIGINT,
    caller_gone_ms BIGINT,
    callee_gone_ms BIGINT,
    setup_ms BIGINT
);
CREATE INDEX calls_by_tenant ON calls (tenant_id, id);
CREATE INDEX calls_by_caller ON calls (tenant_id, caller_id, id);
CREATE INDEX calls_by_callee ON calls (tenant_id, callee_id, id);
CREATE INDEX calls_open ON calls (state) WHERE state <> 'ended';

CREATE TABLE call_parties (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

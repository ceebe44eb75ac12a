-- Tips and payouts (docs/money.md): the plan feature `monetization` (the Premium seed plan has
-- it; other existing plans stay without it until an admin changes them), each user's smallest
-- accepted tip, the message of each tip, and creators' payouts.
--
-- A tip is one ledger transaction; `ledger_tips` keeps only what the ledger has no column for
-- (its message). A payout's money is in the ledger too (`payouts_pending` while requested); the
-- `payouts` row is its state, decided once (the UPDATE that decides it requires
-- status = 'requested').

ALTER TABLE plans ADD COLUMN feature_monetization BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET feature_monetization = 1 WHERE id = 'plan_premium';

ALTER TABLE end_users ADD COLUMN tip_minimum BIGINT NOT NULL DEFAULT 1;

CREATE TABLE ledger_tips (
    -- The tip's ledger transaction.
    transaction_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    message TEXT NOT NULL
);

CREATE TABLE payouts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- requested, paid or rejected.
    status TEXT NOT NULL,
    reference TEXT,
    reason TEXT,
    request_transaction_id TEXT NOT NULL,
    decision_transaction_id TEXT,
    created_ms BIGINT NOT NULL,
    decided_ms BIGINT
);
CREATE INDEX payouts_tenant ON payouts (tenant_id, id);
CREATE INDEX payouts_user ON payouts (tenant_id, user_id, id);

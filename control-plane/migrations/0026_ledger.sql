-- The ledger (docs/money.md): a tenant's currency and commission, accounts with their kept
-- balances, immutable transactions and their entries, and the idempotency keys of the requests
-- that moved value.
--
-- `ledger_accounts.balance` is a cache of SUM(ledger_entries.amount) per account, updated in the
-- same transaction as the entries; wallets and earnings are debited by a conditional UPDATE
-- (`balance + amount >= 0`), which is what keeps them from going below zero. Nothing updates or
-- deletes a row of ledger_transactions or ledger_entries: corrections are new transactions.

ALTER TABLE tenants ADD COLUMN currency TEXT NOT NULL DEFAULT 'USD';
ALTER TABLE tenants ADD COLUMN platform_fee_bps BIGINT NOT NULL DEFAULT 2000;

CREATE TABLE ledger_accounts (
    tenant_id TEXT NOT NULL,
    -- "wallet:<user id>", "earnings:<user id>", "platform" or "external".
    account TEXT NOT NULL,
    balance BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, account)
);

CREATE TABLE ledger_transactions (
    -- Time-ordered ids (secrets::new_time_id): newest first is ORDER BY id DESC.
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    source TEXT NOT NULL,
    -- The user the transaction is about (the credited or paying user), and the creator paid.
    user_id TEXT NOT NULL,
    counterparty_id TEXT,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reference TEXT,
    reason TEXT,
    -- A refund's original transaction.
    refund_of TEXT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX ledger_transactions_tenant ON ledger_transactions (tenant_id, id);
CREATE INDEX ledger_transactions_user ON ledger_transactions (tenant_id, user_id, id);
CREATE INDEX ledger_transactions_counterparty ON ledger_transactions (tenant_id, counterparty_id, id);
CREATE INDEX ledger_transactions_refund_of ON ledger_transactions (refund_of);

CREATE TABLE ledger_entries (
    transaction_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (transaction_id, account)
);
CREATE INDEX ledger_entries_account ON ledger_entries (tenant_id, account);

-- One row per Idempotency-Key of a tenant: the route and body hash it was first used with and
-- the answer given, written in the transaction that moved the value.
CREATE TABLE idempotency_keys (
    tenant_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    route TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, idem_key)
);

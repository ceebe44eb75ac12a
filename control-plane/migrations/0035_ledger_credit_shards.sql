-- Credits to an account go to one of 16 rows of `ledger_account_credits`, picked at random, so
-- many payments to one creator (and to the tenant's platform account) at once do not queue on
-- one balance row (bench-live-chat: 500 tips a second to one creator). An account's kept
-- balance is its `ledger_accounts.balance` plus the sum of its credit rows. A debit first moves
-- the account's credit rows into `balance` (DELETE … RETURNING, then the conditional UPDATE in
-- the same transaction), so the floor sees every committed credit and nothing is counted twice.

CREATE TABLE ledger_account_credits (
    tenant_id TEXT NOT NULL,
    account TEXT NOT NULL,
    shard BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, account, shard)
);

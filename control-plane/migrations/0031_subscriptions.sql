-- Creator subscriptions, pay-per-view purchases and the access modes of live streams
-- (docs/money.md). The money of both is in the ledger (sources `subscription` and `purchase`);
-- these rows are the memberships the one membership check (`memberships::entitled`) reads.

-- A creator's monthly price in minor units of the tenant's currency; NULL: not offering one.
ALTER TABLE end_users ADD COLUMN subscription_price BIGINT;

-- One row per (tenant, creator, subscriber): `kind` 'wallet' (bought from the wallet, renewed
-- from it while `renews` = 1) or 'tenant' (declared by the tenant, which bills it itself).
-- Access lasts while ends_ms is in the future. `period` counts the wallet periods paid; the
-- renewal of period N+1 is keyed `renew {id} {N+1}` and moves the row from N to N+1 with one
-- conditional UPDATE, so of two replicas renewing at once one does it.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- wallet: the price of each period; NULL for tenant-declared.
    price BIGINT,
    renews BIGINT NOT NULL DEFAULT 0,
    period BIGINT NOT NULL DEFAULT 0,
    started_ms BIGINT NOT NULL,
    ends_ms BIGINT NOT NULL,
    -- The ledger transaction of the last period paid.
    transaction_id TEXT,
    -- When renewal failed (the wallet did not cover it) and the subscription lapsed.
    lapsed_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, creator_id, user_id)
);
CREATE INDEX subscriptions_user ON subscriptions (tenant_id, user_id);
CREATE INDEX subscriptions_due ON subscriptions (renews, ends_ms);

-- Access 'subscribers' (of creator_id) and 'pay_per_view' (at price) beside 'public' and
-- 'token'.
ALTER TABLE live_streams ADD COLUMN creator_id TEXT;
ALTER TABLE live_streams ADD COLUMN price BIGINT;

-- A viewer bought a pay-per-view stream once; the primary key refuses a second purchase.
CREATE TABLE stream_purchases (
    tenant_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, stream_id, user_id)
);

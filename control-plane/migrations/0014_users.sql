-- A tenant's end users, identified by the tenant's own ids, and the keys their user tokens are
-- signed with. A signing key's secret is kept as is: HS256 needs it to check signatures.

CREATE TABLE end_users (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    avatar_url TEXT,
    creator BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    secret TEXT NOT NULL,
    managed BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX signing_keys_tenant ON signing_keys (tenant_id, created_at);

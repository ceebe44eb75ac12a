-- The cluster: node identities (certificate fingerprint, drain and revocation), one-time join
-- tokens, and where a station may be placed.

ALTER TABLE nodes ADD COLUMN cert_sha256 TEXT;
ALTER TABLE nodes ADD COLUMN draining BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN revoked_at BIGINT;
CREATE UNIQUE INDEX nodes_cert ON nodes (cert_sha256);

CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    node_id TEXT
);

ALTER TABLE stations ADD COLUMN region TEXT NOT NULL DEFAULT '';
ALTER TABLE stations ADD COLUMN node_labels TEXT NOT NULL DEFAULT '{}';

-- Facts every control-plane replica must agree on (the cluster CA's fingerprint).
CREATE TABLE cluster_facts (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- TURN for calls: where each node's TURN relay is reached (a JSON array of `turn:`/`turns:`
-- URLs, as the node advertises them; '[]' without TURN), and the shared secrets the relays check
-- time-limited credentials against (the TURN REST API scheme). The newest secret makes new
-- credentials; older ones stay until every credential made with them has expired
-- (`turn.credential_ttl_secs` after the next secret took over), then the leader deletes them.

ALTER TABLE nodes ADD COLUMN turn_urls TEXT NOT NULL DEFAULT '[]';

CREATE TABLE turn_secrets (
    id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX turn_secrets_created ON turn_secrets (created_ms);

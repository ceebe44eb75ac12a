-- Media attachments of 1-to-1 messages: files a tenant's end user uploads (POST
-- /v1/me/attachments), stored once per content in the media store (`sha256` names the blob, as
-- `media_files` rows do) and served at /v1/attachments/{id}. The id is the capability: random,
-- 190 bits, so only those it was given can fetch the file. A message names its attachment by
-- that URL (`messages.media_url`). An attachment goes with its tenant, and with the last
-- message that carries it when that message is deleted.
--
-- The plan limit `attachment_bytes` bounds one upload: 10 MiB on existing plans, 25 MiB on
-- Premium (the seed plan with messaging).

CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    media_type TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    width BIGINT,
    height BIGINT,
    duration_ms BIGINT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX attachments_sha256 ON attachments (sha256);
CREATE INDEX attachments_owner ON attachments (tenant_id, user_id);

ALTER TABLE plans ADD COLUMN attachment_bytes BIGINT NOT NULL DEFAULT 10485760;
UPDATE plans SET attachment_bytes = 26214400 WHERE id = 'plan_premium';

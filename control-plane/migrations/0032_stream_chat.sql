-- Live chat of streams (docs/realtime.md, "Stream chat"): the plan feature `live_chat` (the
-- Premium seed plan has it), every message said in a stream's chat (its saved chat; a deleted
-- message keeps its row, marked), and each creator's moderation: the moderators they named,
-- the users they timed out or banned, and their chat settings.
--
-- Moderation is per creator (a ban holds in all the creator's streams); a chat needs a stream
-- with a creator. A tip shown in a chat is a row of kind 'tip' naming its ledger transaction,
-- once (the unique index), so a retried tip never shows twice.

ALTER TABLE plans ADD COLUMN feature_live_chat BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET feature_live_chat = 1 WHERE id = 'plan_premium';

CREATE TABLE stream_chat_messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- 'message' or 'tip'.
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    amount BIGINT,
    transaction_id TEXT,
    created_ms BIGINT NOT NULL,
    deleted_ms BIGINT,
    deleted_by TEXT
);
CREATE INDEX stream_chat_recent ON stream_chat_messages (tenant_id, stream_id, id);
CREATE INDEX stream_chat_by_user ON stream_chat_messages (tenant_id, creator_id, user_id, created_ms);
CREATE UNIQUE INDEX stream_chat_tips ON stream_chat_messages (transaction_id);

CREATE TABLE chat_moderators (
    tenant_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, creator_id, user_id)
);

CREATE TABLE chat_restrictions (
    tenant_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- A timeout's end (unix ms); NULL is a ban, until it is lifted.
    until_ms BIGINT,
    by_user_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, creator_id, user_id)
);

CREATE TABLE chat_settings (
    tenant_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    slow_mode_secs BIGINT NOT NULL DEFAULT 0,
    subscribers_only BIGINT NOT NULL DEFAULT 0,
    -- A JSON array of lower-case words.
    blocked_words TEXT NOT NULL DEFAULT '[]',
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, creator_id)
);

-- 1-to-1 messaging between a tenant's end users. A conversation is a pair of users; each member
-- has a row (what they last read, when the conversation last moved) so "my conversations" and
-- unread counts are one indexed read. Messages outlive their sender's profile: a deleted user's
-- messages stay for the other party.

ALTER TABLE end_users ADD COLUMN last_seen_at BIGINT;

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    content TEXT NOT NULL,
    media_url TEXT,
    media_type TEXT,
    created_ms BIGINT NOT NULL,
    edited_ms BIGINT,
    deleted_ms BIGINT
);
CREATE INDEX messages_conversation ON messages (conversation_id, created_ms, id);

CREATE TABLE conversation_members (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    other_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    last_message_ms BIGINT NOT NULL,
    -- The newest message this member has read, as (created_ms, id); (0, '') when none.
    read_ms BIGINT NOT NULL,
    read_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, other_id)
);
CREATE INDEX conversation_members_recent ON conversation_members (tenant_id, user_id, last_message_ms);

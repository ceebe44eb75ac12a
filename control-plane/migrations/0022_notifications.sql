-- Notifications of a tenant's end users: the ones Onda makes (a new message) and the tenant's own
-- (POST /v1/users/{user_id}/notifications). A user's list is read newest first and its unread
-- ones counted through the index on (tenant_id, user_id, created_ms, id). `read_ms` is NULL
-- until the user marks it read. They go with their user.

CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    link TEXT,
    data TEXT NOT NULL,
    read_ms BIGINT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX notifications_user ON notifications (tenant_id, user_id, created_ms, id);

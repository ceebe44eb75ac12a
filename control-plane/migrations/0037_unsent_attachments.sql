-- Attachments uploaded but never sent are removed after a grace period
-- (`media.unsent_attachment_grace_secs`). `sent_ms` is set, in the transaction that stores the
-- message, by the first message that carries the attachment; the sweep deletes only rows whose
-- `sent_ms` is still NULL, by a conditional DELETE that PostgreSQL re-checks on the row's newest
-- version (a send that committed meanwhile keeps it) and that SQLite runs alone.
--
-- Attachments sent before this migration: marked sent now (a message names them by their URL).

ALTER TABLE attachments ADD COLUMN sent_ms BIGINT;
UPDATE attachments SET sent_ms = created_ms WHERE EXISTS
    (SELECT 1 FROM messages WHERE messages.tenant_id = attachments.tenant_id
     AND messages.media_url = '/v1/attachments/' || attachments.id);
CREATE INDEX attachments_unsent ON attachments (created_ms) WHERE sent_ms IS NULL;

-- The plan feature `messaging`: end users' realtime gateway and conversations. The Premium seed
-- plan has it; other existing plans stay as they were (without it) until an admin changes them.

ALTER TABLE plans ADD COLUMN feature_messaging BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET feature_messaging = 1 WHERE id = 'plan_premium';

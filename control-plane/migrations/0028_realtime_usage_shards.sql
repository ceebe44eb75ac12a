-- Each message is counted in the transaction that stores it. On PostgreSQL that addition holds
-- the day's usage row locked until the commit, which put every message of a tenant in one
-- queue (one commit at a time). The unbilled row of a day is now one of 16 (`shard`, chosen at
-- random by each writer), so 16 such transactions commit at once; every reader sums the rows.
ALTER TABLE realtime_usage ADD COLUMN shard BIGINT NOT NULL DEFAULT 0;
DROP INDEX realtime_usage_unbilled;
CREATE UNIQUE INDEX realtime_usage_unbilled ON realtime_usage (tenant_id, period_start_ms, shard)
    WHERE invoice_id IS NULL;

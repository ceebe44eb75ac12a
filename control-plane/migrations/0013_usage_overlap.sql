-- A node's usage of one station mount is taken once per stretch of time: a new report is vetted
-- against the periods this node already reported for the same station and mount (see
-- `cluster::usage_vet`), found through this index.
CREATE INDEX usage_mounts_node_period ON usage_mounts (node_id, station_id, mount, period_end_ms);

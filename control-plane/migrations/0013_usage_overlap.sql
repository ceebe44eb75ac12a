-- A node's usage of one station mount is taken once per stretch of time: a new report is vetted
-- against the periods this node already reported (see `cluster::usage_vet`), found through this
-- index by the node and a bounded range of period ends (a stored period is at most
-- MAX_USAGE_PERIOD_MS long).
CREATE INDEX usage_mounts_node_period ON usage_mounts (node_id, period_end_ms);

-- When a node last ran its TURN relay, kept after it stops advertising one: a node that turned
-- TURN off still sends the usage it spooled while it ran (after a partition, say), and that
-- relay time is billed (docs/calls.md "Metering"). NULL while the node advertises TURN URLs, or
-- when it never did; set to the moment of the first advert without them.
ALTER TABLE nodes ADD COLUMN turn_last_ms BIGINT;

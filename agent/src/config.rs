//! The agent's configuration (`onda agent --config agent.toml`): who the node is, where the
//! control planes are, where it keeps its identity, and the edge settings it serves with. Every
//! key can be overridden as `ONDA_<SECTION>_<KEY>`.

use onda_edge::config::{AdminConfig, HttpConfig, LimitsConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub node: NodeConfig,
    pub control_plane: ControlPlaneConfig,
    /// The edge's HTTP listener (listeners, sources, status, metrics).
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub usage: UsageConfig,
    /// The edge's RTMP ingest for live streams (`listen`; empty: none).
    pub rtmp: onda_edge::config::RtmpConfig,
    /// How the edge cuts live streams into HLS.
    pub hls: onda_edge::config::HlsConfig,
}

/// Usage metering (see `usage`): how often listener usage is made durable on the node, and how
/// long one report covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Listener usage is written to the node's spool this often (milliseconds); a kill -9 of
    /// the agent can lose at most this much of its listeners' time.
    pub checkpoint_ms: u64,
    /// One usage report covers this long (milliseconds); reports are what the control plane
    /// stores and bills from.
    pub interval_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            checkpoint_ms: 1_000,
            interval_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unique name in the cluster; default: the host name.
    pub name: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    /// Base URL listeners reach this edge at (`http://edge1.example.com:8000`); default:
    /// `http://` and the bound address when that is a concrete address.
    pub public_url: String,
    /// Where publishers reach this node's RTMP ingest (`rtmp://edge1.example.com:1935`);
    /// default: `rtmp://` and the bound `rtmp.listen` address when that is a concrete address.
    pub rtmp_url: String,
    /// Concurrent listeners this node should carry.
    pub capacity_listeners: u64,
    /// Outgoing bandwidth this node should use, in Mbit/s.
    pub capacity_mbps: u64,
    /// Where the node keeps its identity (key, certificate) and last desired state.
    pub state_dir: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: String::new(),
            region: String::new(),
            labels: BTreeMap::new(),
            public_url: String::new(),
            rtmp_url: String::new(),
            capacity_listeners: 5_000,
            capacity_mbps: 1_000,
            state_dir: "onda-node".to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    /// QUIC addresses of the control planes (`cp1.example.com:7443`); the agent tries them in
    /// turn and moves to the next when one fails.
    pub addresses: Vec<String>,
    /// Longest wait between reconnection attempts, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            addresses: vec!["127.0.0.1:7443".to_string()],
            max_backoff_ms: 5_000,
        }
    }
}

impl AgentConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.control_plane.addresses.is_empty() {
            anyhow::bail!(
                "control_plane.addresses is empty: list at least one control plane (\"host:7443\")"
            );
        }
        if self.node.capacity_listeners == 0 || self.node.capacity_mbps == 0 {
            anyhow::bail!("node.capacity_listeners and node.capacity_mbps must be at least 1");
        }
        if self.node.state_dir.trim().is_empty() {
            anyhow::bail!("node.state_dir must name a directory");
        }
        let most = onda_shared::cluster::proto::MAX_USAGE_INTERVAL_MS;
        if !(100..=most).contains(&self.usage.interval_ms) {
            anyhow::bail!("usage.interval_ms must be between 100 and {most}");
        }
        if !(50..=self.usage.interval_ms).contains(&self.usage.checkpoint_ms) {
            anyhow::bail!(
                "usage.checkpoint_ms must be between 50 and usage.interval_ms ({})",
                self.usage.interval_ms
            );
        }
        if !(100..=600_000).contains(&self.control_plane.max_backoff_ms) {
            anyhow::bail!("control_plane.max_backoff_ms must be between 100 and 600000");
        }
        Ok(())
    }
}

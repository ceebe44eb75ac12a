//! The agent's configuration (`onda agent --config agent.toml`): who the node is, where the
//! control planes are, where it keeps its identity, and the edge settings it serves with. Every
//! key can be overridden as `ONDA_<SECTION>_<KEY>`.

use onda_edge::config::{AdminConfig, HttpConfig, LimitsConfig};
use onda_shared::config::{ConfigError, empty_is_none};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use url::Url;

/// Returns a [`ConfigError`] under `key` with a formatted message.
macro_rules! invalid {
    ($key:expr, $($message:tt)+) => {
        return Err(ConfigError::new($key, format!($($message)+)))
    };
}

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
    #[serde(with = "empty_is_none")]
    pub public_url: Option<Url>,
    /// Where publishers reach this node's RTMP ingest (`rtmp://edge1.example.com:1935`);
    /// default: `rtmp://` and the bound `rtmp.listen` address when that is a concrete address.
    #[serde(with = "empty_is_none")]
    pub rtmp_url: Option<Url>,
    /// Concurrent listeners this node should carry.
    pub capacity_listeners: u64,
    /// Outgoing bandwidth this node should use, in Mbit/s.
    pub capacity_mbps: u64,
    /// Where the node keeps its identity (key, certificate) and last desired state.
    pub state_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: String::new(),
            region: String::new(),
            labels: BTreeMap::new(),
            public_url: None,
            rtmp_url: None,
            capacity_listeners: 5_000,
            capacity_mbps: 1_000,
            state_dir: PathBuf::from("onda-node"),
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
    /// Checks the agent's own sections (the edge's are checked by the edge when it starts); the
    /// first error found names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node.validate()?;
        self.control_plane.validate()?;
        self.usage.validate()
    }
}

impl NodeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("node.capacity_listeners", self.capacity_listeners),
            ("node.capacity_mbps", self.capacity_mbps),
        ] {
            if v == 0 {
                invalid!(key, "{key} must be at least 1");
            }
        }
        if self.state_dir.to_string_lossy().trim().is_empty() {
            invalid!("node.state_dir", "node.state_dir must name a directory");
        }
        Ok(())
    }
}

impl ControlPlaneConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.addresses.is_empty() {
            invalid!(
                "control_plane.addresses",
                "control_plane.addresses is empty: list at least one control plane (\"host:7443\")"
            );
        }
        if !(100..=600_000).contains(&self.max_backoff_ms) {
            invalid!(
                "control_plane.max_backoff_ms",
                "control_plane.max_backoff_ms must be between 100 and 600000"
            );
        }
        Ok(())
    }
}

impl UsageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let most = onda_shared::cluster::proto::MAX_USAGE_INTERVAL_MS;
        if !(100..=most).contains(&self.interval_ms) {
            invalid!(
                "usage.interval_ms",
                "usage.interval_ms must be between 100 and {most}"
            );
        }
        if !(50..=self.interval_ms).contains(&self.checkpoint_ms) {
            invalid!(
                "usage.checkpoint_ms",
                "usage.checkpoint_ms must be between 50 and usage.interval_ms ({})",
                self.interval_ms
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onda_shared::config::load_from;

    fn load(text: &str, vars: &[(&str, &str)]) -> AgentConfig {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        load_from(text, "agent.toml", vars).expect(text)
    }

    #[test]
    fn each_section_names_the_key_it_refuses() {
        for (text, key) in [
            ("[node]\ncapacity_mbps = 0\n", "node.capacity_mbps"),
            ("[node]\nstate_dir = \"\"\n", "node.state_dir"),
            (
                "[control_plane]\naddresses = []\n",
                "control_plane.addresses",
            ),
            (
                "[control_plane]\nmax_backoff_ms = 1\n",
                "control_plane.max_backoff_ms",
            ),
            ("[usage]\ncheckpoint_ms = 20000\n", "usage.checkpoint_ms"),
        ] {
            let err = load(text, &[]).validate().expect_err(text);
            assert_eq!(err.key, key, "{text}");
            assert!(err.message.contains(key), "{err}");
        }
    }

    /// The node's public URLs are URLs once read; empty (the default) means "derive it from the
    /// bound address", in the file and the environment alike.
    #[test]
    fn public_urls_are_optional_urls() {
        let cfg = load(
            "[node]\npublic_url = \"http://edge1.example.com:8000\"\n\
             rtmp_url = \"rtmp://edge1.example.com:1935\"\n",
            &[],
        );
        assert_eq!(
            cfg.node.public_url.as_ref().map(Url::as_str),
            Some("http://edge1.example.com:8000/")
        );
        // rtmp:// is no scheme the URL standard knows: it is kept as written.
        assert_eq!(
            cfg.node.rtmp_url.as_ref().map(Url::as_str),
            Some("rtmp://edge1.example.com:1935")
        );
        let cfg = load(
            "[node]\npublic_url = \"http://edge1.example.com:8000\"\n",
            &[
                ("ONDA_NODE_PUBLIC_URL", ""),
                ("ONDA_NODE_STATE_DIR", "/var/lib/onda"),
            ],
        );
        assert_eq!(cfg.node.public_url, None);
        assert_eq!(cfg.node.rtmp_url, None);
        assert_eq!(cfg.node.state_dir, PathBuf::from("/var/lib/onda"));
        let err = load_from::<AgentConfig, _>(
            "[node]\npublic_url = \"edge1.example.com\"\n",
            "agent.toml",
            Vec::new(),
        )
        .expect_err("not a URL");
        assert!(err.to_string().contains("node.public_url"), "{err}");
    }
}

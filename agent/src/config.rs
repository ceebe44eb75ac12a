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
    /// The node's TURN relay for calls (coturn, run and supervised by the agent).
    pub turn: TurnConfig,
}

/// Whether the node runs TURN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnMode {
    /// When coturn's `turnserver` is installed (on PATH, or `turn.binary`).
    #[default]
    Auto,
    On,
    Off,
}

/// The node's TURN relay: coturn, which the agent configures, starts, restarts and stops, and
/// whose shared secrets come with the desired state. `ONDA_TURN_<KEY>` overrides each key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// `auto` (default: on when `turnserver` is installed), `on` (a missing coturn is an
    /// error) or `off`.
    pub enabled: TurnMode,
    /// coturn's executable (Debian package `coturn`).
    pub binary: PathBuf,
    /// The IP address TURN listens on; empty: every address of the host.
    #[serde(with = "empty_is_none")]
    pub listen: Option<std::net::IpAddr>,
    /// TURN over UDP and TCP.
    pub port: u16,
    /// TURN over TLS (`turns:`), only with `cert` and `key`.
    pub tls_port: u16,
    /// PEM certificate chain and private key for `turns:`; empty: no TLS.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The UDP ports relays are allocated from (open them in the firewall).
    pub min_port: u16,
    pub max_port: u16,
    /// The host name or address in the advertised `turn:` URLs; empty: the host of
    /// `node.public_url` (or of the edge's bound address).
    pub public_host: String,
    /// The node's public IP address when it is behind NAT (coturn's `external-ip`); empty: none.
    #[serde(with = "empty_is_none")]
    pub external_ip: Option<std::net::IpAddr>,
    /// Relay to peers on private, loopback, link-local and shared (CGNAT) addresses. Off in
    /// production: a relay there would let any caller reach the node's own networks. Tests
    /// and `onda dev` turn it on (their peers are on loopback).
    pub allow_private_peers: bool,
    /// Relays at once on the node, and per credential (coturn's `total-quota`, `user-quota`).
    pub total_quota: u32,
    pub user_quota: u32,
    /// Bytes per second one relay may carry (coturn's `max-bps`).
    pub max_bps: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: TurnMode::Auto,
            binary: PathBuf::from("turnserver"),
            listen: None,
            port: 3478,
            tls_port: 5349,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            min_port: 49152,
            max_port: 65535,
            public_host: String::new(),
            external_ip: None,
            allow_private_peers: false,
            total_quota: 1000,
            user_quota: 10,
            // 10 Mbit/s: an HD call's audio and video with room to spare.
            max_bps: 1_250_000,
        }
    }
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
        self.usage.validate()?;
        self.turn.validate()?;
        self.turn_ports_free()
    }

    /// coturn listens on TCP too and, finding its port taken, retries the bind for ever without
    /// serving UDP either: a TURN port that is also the edge's HTTP or RTMP port is refused here
    /// with a sentence instead of a relay that never answers.
    fn turn_ports_free(&self) -> Result<(), ConfigError> {
        if self.turn.enabled == TurnMode::Off {
            return Ok(());
        }
        // Two listeners on different concrete addresses may share a port.
        let overlaps = |a: std::net::SocketAddr| match self.turn.listen {
            None => true,
            Some(ip) => a.ip().is_unspecified() || a.ip() == ip,
        };
        let taken: Vec<(&str, u16)> = [
            ("http.listen", Some(self.http.listen)),
            ("rtmp.listen", self.rtmp.listen),
        ]
        .into_iter()
        .filter_map(|(name, a)| a.filter(|a| overlaps(*a)).map(|a| (name, a.port())))
        .collect();
        let tls = !self.turn.cert.as_os_str().is_empty();
        let turn = [
            Some(("turn.port", self.turn.port)),
            tls.then_some(("turn.tls_port", self.turn.tls_port)),
        ];
        for (key, port) in turn.into_iter().flatten() {
            if let Some((other, _)) = taken.iter().find(|(_, p)| *p == port) {
                invalid!(
                    key,
                    "{key} = {port} is also {other}'s port: TURN listens on TCP too, so give it \
                     a port of its own (3478 is TURN's)"
                );
            }
        }
        Ok(())
    }
}

impl TurnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.port == 0 {
            invalid!(
                "turn.port",
                "turn.port must be a port number (1-65535; 3478 is TURN's)"
            );
        }
        if self.min_port == 0 || self.min_port > self.max_port {
            invalid!(
                "turn.min_port",
                "turn.min_port ({}) must be at least 1 and at most turn.max_port ({})",
                self.min_port,
                self.max_port
            );
        }
        let tls = [&self.cert, &self.key].map(|p| !p.as_os_str().is_empty());
        if tls[0] != tls[1] {
            invalid!(
                if tls[0] { "turn.key" } else { "turn.cert" },
                "turn.cert and turn.key go together: set both for turns: URLs, or neither"
            );
        }
        if tls[0] && (self.tls_port == 0 || self.tls_port == self.port) {
            invalid!(
                "turn.tls_port",
                "turn.tls_port must be a port other than turn.port (5349 is TURN over TLS's)"
            );
        }
        let host = self.public_host.trim();
        if host.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '@' | '#')) {
            invalid!(
                "turn.public_host",
                "turn.public_host = {host:?} must be a bare host name or address \
                 (e.g. turn1.example.com), without a scheme, port or path"
            );
        }
        if self.total_quota == 0 || self.user_quota == 0 || self.max_bps == 0 {
            invalid!(
                "turn.total_quota",
                "turn.total_quota, turn.user_quota and turn.max_bps must be at least 1: they \
                 bound what one node relays"
            );
        }
        Ok(())
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
            ("[turn]\nport = 0\n", "turn.port"),
            (
                "[turn]\nmin_port = 60000\nmax_port = 50000\n",
                "turn.min_port",
            ),
            ("[turn]\ncert = \"/etc/turn.pem\"\n", "turn.key"),
            ("[turn]\npublic_host = \"turn://x\"\n", "turn.public_host"),
            ("[turn]\nport = 8000\n", "turn.port"),
            (
                "[rtmp]\nlisten = \"127.0.0.1:1935\"\n[turn]\nport = 1935\nlisten = \"127.0.0.1\"\n",
                "turn.port",
            ),
            (
                "[turn]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\ntls_port = 8000\n",
                "turn.tls_port",
            ),
        ] {
            let err = load(text, &[]).validate().expect_err(text);
            assert_eq!(err.key, key, "{text}");
            assert!(err.message.contains(key), "{err}");
        }
    }

    /// TURN may share a port number with the edge only on another concrete address, or when
    /// it does not run.
    #[test]
    fn turn_shares_no_port_with_the_edge() {
        for text in [
            "[http]\nlisten = \"127.0.0.1:8000\"\n[turn]\nlisten = \"127.0.0.2\"\nport = 8000\n",
            "[turn]\nenabled = \"off\"\nport = 8000\n",
        ] {
            load(text, &[]).validate().expect(text);
        }
        let err = load("[turn]\nport = 8000\n", &[])
            .validate()
            .expect_err("8000");
        assert!(err.message.contains("http.listen"), "{err}");
    }

    /// TURN's keys come from the file and the environment like every other; its mode is a word.
    #[test]
    fn turn_keys_read_from_the_file_and_the_environment() {
        let cfg = load("", &[]);
        assert_eq!(cfg.turn.enabled, TurnMode::Auto);
        assert_eq!((cfg.turn.port, cfg.turn.listen), (3478, None));
        assert!(!cfg.turn.allow_private_peers);
        let cfg = load(
            "[turn]\nenabled = \"off\"\nport = 3479\n",
            &[
                ("ONDA_TURN_ENABLED", "on"),
                ("ONDA_TURN_LISTEN", "127.0.0.1"),
                ("ONDA_TURN_ALLOW_PRIVATE_PEERS", "true"),
            ],
        );
        assert_eq!(cfg.turn.enabled, TurnMode::On);
        assert_eq!(cfg.turn.port, 3479);
        assert_eq!(cfg.turn.listen, Some([127, 0, 0, 1].into()));
        assert!(cfg.turn.allow_private_peers);
        let err = load_from::<AgentConfig, _>(
            "[turn]\nenabled = \"sometimes\"\n",
            "agent.toml",
            Vec::new(),
        )
        .expect_err("an unknown mode");
        assert!(err.to_string().contains("sometimes"), "{err}");
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

//! Control-plane configuration: the TOML file (`onda control-plane --config cp.toml`), every key
//! overridable as `ONDA_<SECTION>_<KEY>`, then validated into what the server runs with.

use onda_shared::config::{ConfigError, empty_is_none, parsed};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Returns a [`ConfigError`] under `key` with a formatted message.
macro_rules! invalid {
    ($key:expr, $($message:tt)+) => {
        return Err(ConfigError::new($key, format!($($message)+)))
    };
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub cluster: ClusterConfig,
    pub media: MediaConfig,
    pub nowplaying: NowPlayingConfig,
    pub webhooks: WebhooksConfig,
    pub realtime: RealtimeConfig,
    pub turn: TurnConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the panel API (and later the redirector). `ONDA_HTTP_LISTEN`.
    #[serde(with = "parsed")]
    pub listen: SocketAddr,
    /// Largest JSON body the API accepts, in bytes. `ONDA_HTTP_MAX_BODY_BYTES`.
    pub max_body_bytes: u64,
    /// The built web app (`web/dist`, made by `make dev`/`make test`), served at `/app/`.
    /// `ONDA_HTTP_APP_DIR`.
    pub app_dir: PathBuf,
    /// The address clients reach the API at (`https://panel.example.com`, or with a path prefix
    /// a proxy adds), for the links the API hands out that clients use elsewhere: message
    /// attachments' `url`s are absolute on it. Empty: such links are paths on the API's own
    /// origin. `ONDA_HTTP_PUBLIC_URL`.
    pub public_url: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 64 * 1024,
            app_dir: PathBuf::from("web/dist"),
            public_url: String::new(),
        }
    }
}

impl HttpConfig {
    /// `public_url` checked: an http(s) URL with a host and nothing after its path, without its
    /// trailing `/`; None when empty.
    fn public_url(&self) -> Result<Option<String>, ConfigError> {
        let raw = self.public_url.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let key = "http.public_url";
        let url = match url::Url::parse(raw) {
            Ok(url) => url,
            Err(e) => invalid!(key, "http.public_url = {raw:?} is not a URL ({e})"),
        };
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            invalid!(
                key,
                "http.public_url = {raw:?} must be an http:// or https:// URL with a host, \
                 e.g. \"https://panel.example.com\""
            );
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            invalid!(
                key,
                "http.public_url = {raw:?} must have no query, fragment or user: links are made \
                 by appending paths to it"
            );
        }
        Ok(Some(url.as_str().trim_end_matches('/').to_string()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/onda.db` (created when missing) or `postgres://user@host/db`.
    /// `ONDA_DATABASE_URL`.
    pub url: String,
    /// Pool size. `ONDA_DATABASE_MAX_CONNECTIONS`.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://onda.db".to_string(),
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The admin bearer token; empty disables admin access. Prefer `ONDA_AUTH_ADMIN_TOKEN` to
    /// writing it in a file.
    pub admin_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// UDP address of the QUIC control channel nodes connect to; empty disables the cluster
    /// (panel API only). `ONDA_CLUSTER_LISTEN`.
    #[serde(with = "empty_is_none")]
    pub listen: Option<SocketAddr>,
    /// Addresses nodes use to reach the control planes (`host:7443`), for the join command the
    /// API prints; empty: `listen`.
    pub advertise: Vec<String>,
    /// Directory of the cluster CA (`ca.crt`, `ca.key`); replicas share the same CA.
    pub ca_dir: PathBuf,
    /// `memory` (one control plane) or `etcd` (several replicas).
    pub coordinator: String,
    /// etcd client URLs, e.g. `["http://10.0.0.5:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// Key prefix in etcd, so clusters can share one etcd.
    pub etcd_prefix: String,
    /// This replica's name in leader elections and logs; empty: host name and process id.
    pub replica: String,
    /// The lease of each node's liveness in the coordinator: a node whose heartbeats stop this
    /// long is dead and its stations move, even when the replica it was connected to is gone
    /// too. A node connected to a live replica is noticed sooner, by `node_silence_ms`.
    pub node_ttl_ms: u64,
    /// A node whose control connection carries nothing for this long is dead and its stations
    /// move (QUIC's idle timeout; the control plane sends keep-alives six times as often, so a
    /// shorter network hiccup does not end the connection). Defaults to 1500 ms, which with
    /// 250 ms keep-alives rides out a 1 s partition and fails a station over in under 3 s.
    pub node_silence_ms: u64,
    /// How often nodes send heartbeats.
    pub heartbeat_ms: u64,
    /// When a replica becomes the leader it waits up to this long (after one `node_ttl_ms`) for
    /// the nodes that carry stations to reconnect before it moves anything: a control-plane
    /// restart or failover must not look like dead nodes.
    pub reconnect_grace_ms: u64,
    /// Origins feed each station that has no AutoDJ playlist a generated tone (dev and test
    /// clusters only).
    pub demo_tone: bool,
    /// Listeners one node should serve of a station before relay edges are added.
    pub relay_threshold_listeners: u64,
    /// Listeners reserved for each station on its node even when nobody listens.
    pub reserve_listeners: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 7443))),
            advertise: Vec::new(),
            ca_dir: PathBuf::from("cluster-ca"),
            coordinator: "memory".to_string(),
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/onda".to_string(),
            replica: String::new(),
            node_ttl_ms: 5_000,
            node_silence_ms: 1_500,
            heartbeat_ms: 1_000,
            reconnect_grace_ms: 10_000,
            demo_tone: false,
            relay_threshold_listeners: 500,
            reserve_listeners: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Directory of the media store (uploaded audio, one file per content hash); relative paths
    /// are taken from the working directory. `ONDA_MEDIA_DIR`.
    pub dir: PathBuf,
    /// Largest upload accepted, in bytes (413 beyond). `ONDA_MEDIA_MAX_UPLOAD_BYTES`.
    pub max_upload_bytes: u64,
    /// Longest playing time of one file, in seconds (422 beyond; the probe stops decoding there,
    /// so a small file of hours of silence costs no more than this). `ONDA_MEDIA_MAX_DURATION_SECS`.
    pub max_duration_secs: u64,
    /// Uploads probed (decoded by ffmpeg) at once; 0: one per core. `ONDA_MEDIA_PROBE_SLOTS`.
    pub probe_slots: u32,
    /// Of those, at most this many for one tenant; 0: half of them, rounded up.
    /// `ONDA_MEDIA_PROBE_SLOTS_PER_TENANT`.
    pub probe_slots_per_tenant: u32,
    /// How long an upload waits for a probe slot before it is refused with 429 and
    /// `Retry-After`. `ONDA_MEDIA_PROBE_WAIT_SECS`.
    pub probe_wait_secs: u64,
    /// How long a message attachment may wait for the first message that carries it; an upload
    /// no message carried by then is deleted. `ONDA_MEDIA_UNSENT_ATTACHMENT_GRACE_SECS`.
    pub unsent_attachment_grace_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: PathBuf::from("media"),
            max_upload_bytes: 200 * 1024 * 1024,
            max_duration_secs: 3 * 3600,
            probe_slots: 0,
            probe_slots_per_tenant: 0,
            probe_wait_secs: 60,
            unsent_attachment_grace_secs: 24 * 3600,
        }
    }
}

/// The media store's settings checked.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub dir: PathBuf,
    pub max_upload_bytes: u64,
    pub max_duration: std::time::Duration,
    pub probe_slots: usize,
    pub probe_slots_per_tenant: usize,
    pub probe_wait: std::time::Duration,
    pub unsent_attachment_grace: std::time::Duration,
}

/// Smallest `media.max_upload_bytes`: below this not even a short jingle fits.
pub const MIN_UPLOAD_BYTES: u64 = 1024;
/// Largest `media.max_upload_bytes` (64 GiB): bounds what one request may put on disk.
pub const MAX_UPLOAD_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Longest `media.unsent_attachment_grace_secs`: 30 days.
pub const MAX_UNSENT_GRACE_SECS: u64 = 30 * 24 * 3600;

impl MediaConfig {
    pub fn validate(&self) -> Result<MediaSettings, ConfigError> {
        if self.dir.to_string_lossy().trim().is_empty() {
            invalid!(
                "media.dir",
                "media.dir must name a directory, e.g. \"media\""
            );
        }
        if !(MIN_UPLOAD_BYTES..=MAX_UPLOAD_BYTES).contains(&self.max_upload_bytes) {
            invalid!(
                "media.max_upload_bytes",
                "media.max_upload_bytes = {} must be between {MIN_UPLOAD_BYTES} and {MAX_UPLOAD_BYTES}",
                self.max_upload_bytes
            );
        }
        if !(1..=24 * 3600).contains(&self.max_duration_secs) {
            invalid!(
                "media.max_duration_secs",
                "media.max_duration_secs = {} must be between 1 and 86400",
                self.max_duration_secs
            );
        }
        for (key, slots) in [
            ("media.probe_slots", self.probe_slots),
            ("media.probe_slots_per_tenant", self.probe_slots_per_tenant),
        ] {
            if slots > 256 {
                invalid!(key, "{key} = {slots} must be at most 256 (0: automatic)");
            }
        }
        if self.probe_wait_secs > 3600 {
            invalid!(
                "media.probe_wait_secs",
                "media.probe_wait_secs = {} must be at most 3600",
                self.probe_wait_secs
            );
        }
        if !(1..=MAX_UNSENT_GRACE_SECS).contains(&self.unsent_attachment_grace_secs) {
            invalid!(
                "media.unsent_attachment_grace_secs",
                "media.unsent_attachment_grace_secs = {} must be between 1 and \
                 {MAX_UNSENT_GRACE_SECS} (30 days)",
                self.unsent_attachment_grace_secs
            );
        }
        let slots = match self.probe_slots {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        };
        let per_tenant = match self.probe_slots_per_tenant {
            0 => slots.div_ceil(2),
            n => (n as usize).min(slots),
        };
        Ok(MediaSettings {
            dir: self.dir.clone(),
            max_upload_bytes: self.max_upload_bytes,
            max_duration: std::time::Duration::from_secs(self.max_duration_secs),
            probe_slots: slots,
            probe_slots_per_tenant: per_tenant,
            probe_wait: std::time::Duration::from_secs(self.probe_wait_secs),
            unsent_attachment_grace: std::time::Duration::from_secs(
                self.unsent_attachment_grace_secs,
            ),
        })
    }
}

/// The public now-playing feeds (`/api/nowplaying/{station}/events`): unauthenticated, so
/// bounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NowPlayingConfig {
    /// Open SSE feeds one client address may hold (IPv6: one /64); 429 beyond.
    /// `ONDA_NOWPLAYING_MAX_SUBSCRIBERS_PER_IP`.
    pub max_subscribers_per_ip: u32,
    /// Open SSE feeds in total on this replica; 503 beyond. Also kept below the process's open
    /// file limit, so the feeds never take the descriptors the API needs.
    /// `ONDA_NOWPLAYING_MAX_SUBSCRIBERS`.
    pub max_subscribers: u32,
}

impl Default for NowPlayingConfig {
    fn default() -> Self {
        NowPlayingConfig {
            max_subscribers_per_ip: 16,
            max_subscribers: 20_000,
        }
    }
}

/// The now-playing feed limits checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NowPlayingSettings {
    pub max_subscribers_per_ip: u32,
    pub max_subscribers: u32,
}

impl NowPlayingConfig {
    pub fn validate(&self) -> Result<NowPlayingSettings, ConfigError> {
        for (key, v) in [
            (
                "nowplaying.max_subscribers_per_ip",
                self.max_subscribers_per_ip,
            ),
            ("nowplaying.max_subscribers", self.max_subscribers),
        ] {
            if v == 0 {
                invalid!(key, "{key} must be at least 1");
            }
        }
        Ok(NowPlayingSettings {
            max_subscribers_per_ip: self.max_subscribers_per_ip,
            max_subscribers: self.max_subscribers,
        })
    }
}

impl Default for NowPlayingSettings {
    fn default() -> Self {
        NowPlayingSettings {
            max_subscribers_per_ip: NowPlayingConfig::default().max_subscribers_per_ip,
            max_subscribers: NowPlayingConfig::default().max_subscribers,
        }
    }
}

/// The realtime gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// How often each replica writes the connection time it metered to the database (also at
    /// shutdown). A replica killed without a shutdown loses at most this much of each of its
    /// sockets' connection time from billing. `ONDA_REALTIME_USAGE_FLUSH_SECS`.
    pub usage_flush_secs: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            usage_flush_secs: 60,
        }
    }
}

/// The realtime settings checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimeSettings {
    pub usage_flush: std::time::Duration,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        RealtimeSettings {
            usage_flush: std::time::Duration::from_secs(RealtimeConfig::default().usage_flush_secs),
        }
    }
}

impl RealtimeConfig {
    pub fn validate(&self) -> Result<RealtimeSettings, ConfigError> {
        if !(1..=3600).contains(&self.usage_flush_secs) {
            invalid!(
                "realtime.usage_flush_secs",
                "realtime.usage_flush_secs = {} must be between 1 and 3600",
                self.usage_flush_secs
            );
        }
        Ok(RealtimeSettings {
            usage_flush: std::time::Duration::from_secs(self.usage_flush_secs),
        })
    }
}

/// TURN for calls: the shared secrets the nodes' relays check credentials against, and how long
/// a credential handed to a client lasts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// A new shared secret is made this often (seconds); the one before stays until every
    /// credential made with it has expired. `ONDA_TURN_ROTATE_SECS`.
    pub rotate_secs: u64,
    /// How long a TURN credential is valid (seconds): a call that starts later needs new ones.
    /// `ONDA_TURN_CREDENTIAL_TTL_SECS`.
    pub credential_ttl_secs: u64,
    /// The cluster's TURN realm (coturn's `realm`, sent to every node). `ONDA_TURN_REALM`.
    pub realm: String,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            rotate_secs: 24 * 3600,
            credential_ttl_secs: 3600,
            realm: "onda".to_string(),
        }
    }
}

/// The TURN settings checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSettings {
    pub rotate_secs: u64,
    pub credential_ttl_secs: u64,
    pub realm: String,
}

impl Default for TurnSettings {
    fn default() -> Self {
        let c = TurnConfig::default();
        TurnSettings {
            rotate_secs: c.rotate_secs,
            credential_ttl_secs: c.credential_ttl_secs,
            realm: c.realm,
        }
    }
}

impl TurnConfig {
    pub fn validate(&self) -> Result<TurnSettings, ConfigError> {
        if !(60..=30 * 24 * 3600).contains(&self.rotate_secs) {
            invalid!(
                "turn.rotate_secs",
                "turn.rotate_secs = {} must be between 60 and 2592000 (30 days)",
                self.rotate_secs
            );
        }
        if !(60..=7 * 24 * 3600).contains(&self.credential_ttl_secs) {
            invalid!(
                "turn.credential_ttl_secs",
                "turn.credential_ttl_secs = {} must be between 60 and 604800 (7 days)",
                self.credential_ttl_secs
            );
        }
        // It goes into coturn's configuration file and user database as written.
        let realm = self.realm.trim();
        let ok = (1..=127).contains(&realm.len())
            && realm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            invalid!(
                "turn.realm",
                "turn.realm = {:?} must be 1 to 127 of A-Z, a-z, 0-9, '.', '-', '_' \
                 (e.g. \"turn.example.com\")",
                self.realm
            );
        }
        Ok(TurnSettings {
            rotate_secs: self.rotate_secs,
            credential_ttl_secs: self.credential_ttl_secs,
            realm: realm.to_string(),
        })
    }
}

/// Webhooks to tenants' backends: which addresses they may point at, how deliveries are retried
/// and how many run at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Accept (and deliver to) endpoints on loopback, private, link-local and unique-local
    /// addresses. Off in production: such a URL would let a tenant make the control plane call
    /// into its own network. `ONDA_WEBHOOKS_ALLOW_PRIVATE`.
    pub allow_private: bool,
    /// The first retry's delay in milliseconds; later ones wait 3, 12, 60, 180 and then 360
    /// times this (10 s: 30 s, 2 min, 10 min, 30 min, then every hour).
    /// `ONDA_WEBHOOKS_RETRY_BASE_MS`.
    pub retry_base_ms: u64,
    /// How long after an event its deliveries are retried before they fail.
    /// `ONDA_WEBHOOKS_RETRY_FOR_SECS`.
    pub retry_for_secs: u64,
    /// How long one attempt may take, connecting included; a hanging endpoint holds one
    /// delivery slot this long. `ONDA_WEBHOOKS_TIMEOUT_MS`.
    pub timeout_ms: u64,
    /// How often each replica looks for due deliveries. `ONDA_WEBHOOKS_POLL_MS`.
    pub poll_ms: u64,
    /// Attempts in flight at once on one replica. `ONDA_WEBHOOKS_CONCURRENCY`.
    pub concurrency: u32,
    /// Of those, at most this many for one tenant, so one tenant's slow endpoints cannot hold
    /// every slot. `ONDA_WEBHOOKS_CONCURRENCY_PER_TENANT`.
    pub concurrency_per_tenant: u32,
    /// A PEM file of certificate authorities that `https` endpoints may also chain to, beside
    /// the system's roots (a tenant's private CA; the tests' own). Empty: the system's roots
    /// only. `ONDA_WEBHOOKS_CA_FILE`.
    pub ca_file: PathBuf,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private: false,
            retry_base_ms: 10_000,
            retry_for_secs: 24 * 3600,
            timeout_ms: 10_000,
            poll_ms: 1_000,
            concurrency: 32,
            concurrency_per_tenant: 4,
            ca_file: PathBuf::new(),
        }
    }
}

/// The webhook settings checked.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub allow_private: bool,
    pub retry_base: std::time::Duration,
    pub retry_for: std::time::Duration,
    pub timeout: std::time::Duration,
    pub poll: std::time::Duration,
    pub concurrency: usize,
    pub concurrency_per_tenant: usize,
    /// Trusted for `https` endpoints beside the system's roots (`webhooks.ca_file`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        // The defaults are within every bound `validate` checks.
        let c = WebhooksConfig::default();
        WebhookSettings {
            allow_private: c.allow_private,
            retry_base: std::time::Duration::from_millis(c.retry_base_ms),
            retry_for: std::time::Duration::from_secs(c.retry_for_secs),
            timeout: std::time::Duration::from_millis(c.timeout_ms),
            poll: std::time::Duration::from_millis(c.poll_ms),
            concurrency: c.concurrency as usize,
            concurrency_per_tenant: c.concurrency_per_tenant as usize,
            extra_roots: Vec::new(),
        }
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<WebhookSettings, ConfigError> {
        for (key, v, lo, hi) in [
            ("webhooks.retry_base_ms", self.retry_base_ms, 10, 3_600_000),
            (
                "webhooks.retry_for_secs",
                self.retry_for_secs,
                1,
                7 * 86_400,
            ),
            ("webhooks.timeout_ms", self.timeout_ms, 100, 60_000),
            ("webhooks.poll_ms", self.poll_ms, 10, 60_000),
            ("webhooks.concurrency", u64::from(self.concurrency), 1, 1024),
        ] {
            if !(lo..=hi).contains(&v) {
                invalid!(key, "{key} = {v} must be between {lo} and {hi}");
            }
        }
        if self.concurrency_per_tenant == 0 || self.concurrency_per_tenant > self.concurrency {
            invalid!(
                "webhooks.concurrency_per_tenant",
                "webhooks.concurrency_per_tenant = {} must be at least 1 and at most \
                 webhooks.concurrency ({})",
                self.concurrency_per_tenant,
                self.concurrency
            );
        }
        let extra_roots = if self.ca_file.as_os_str().is_empty() {
            Vec::new()
        } else {
            read_roots(&self.ca_file).map_err(|message| ConfigError {
                key: "webhooks.ca_file".into(),
                message,
            })?
        };
        Ok(WebhookSettings {
            extra_roots,
            allow_private: self.allow_private,
            retry_base: std::time::Duration::from_millis(self.retry_base_ms),
            retry_for: std::time::Duration::from_secs(self.retry_for_secs),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            poll: std::time::Duration::from_millis(self.poll_ms),
            concurrency: self.concurrency as usize,
            concurrency_per_tenant: self.concurrency_per_tenant as usize,
        })
    }
}

/// The certificates of a PEM file, at least one.
fn read_roots(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("webhooks.ca_file {}: cannot read it: {e}", path.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "webhooks.ca_file {}: not PEM certificates: {e}",
            path.display()
        )
    })?;
    if roots.is_empty() {
        return Err(format!(
            "webhooks.ca_file {}: holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(roots)
}

/// The cluster settings checked.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub listen: SocketAddr,
    pub advertise: Vec<String>,
    pub ca_dir: PathBuf,
    pub etcd: Option<(Vec<String>, String)>,
    pub replica: String,
    pub node_ttl: std::time::Duration,
    pub node_silence: std::time::Duration,
    pub heartbeat: std::time::Duration,
    pub reconnect_grace: std::time::Duration,
    pub demo_tone: bool,
    pub relay_threshold_listeners: u64,
    pub reserve_listeners: u64,
    /// The `[turn]` section, for the leader's secret rotation (set from it by
    /// [`ControlPlaneConfig::validate`]).
    pub turn: TurnSettings,
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let etcd = match self.coordinator.as_str() {
            "memory" => None,
            "etcd" => {
                if self.etcd_endpoints.is_empty() {
                    invalid!(
                        "cluster.etcd_endpoints",
                        "cluster.coordinator = \"etcd\" needs cluster.etcd_endpoints, e.g. [\"http://127.0.0.1:2379\"]"
                    );
                }
                Some((self.etcd_endpoints.clone(), self.etcd_prefix.clone()))
            }
            other => invalid!(
                "cluster.coordinator",
                "cluster.coordinator = {other:?}: use \"memory\" (one control plane) or \"etcd\""
            ),
        };
        if !(500..=600_000).contains(&self.node_ttl_ms) {
            invalid!(
                "cluster.node_ttl_ms",
                "cluster.node_ttl_ms = {} must be between 500 and 600000",
                self.node_ttl_ms
            );
        }
        if !(300..=600_000).contains(&self.node_silence_ms) {
            invalid!(
                "cluster.node_silence_ms",
                "cluster.node_silence_ms = {} must be between 300 and 600000",
                self.node_silence_ms
            );
        }
        if self.heartbeat_ms < 100 || self.heartbeat_ms * 2 > self.node_ttl_ms {
            invalid!(
                "cluster.heartbeat_ms",
                "cluster.heartbeat_ms = {} must be at least 100 and at most half of cluster.node_ttl_ms ({})",
                self.heartbeat_ms,
                self.node_ttl_ms
            );
        }
        if self.reconnect_grace_ms > 600_000 {
            invalid!(
                "cluster.reconnect_grace_ms",
                "cluster.reconnect_grace_ms = {} must be at most 600000",
                self.reconnect_grace_ms
            );
        }
        if self.relay_threshold_listeners == 0 {
            invalid!(
                "cluster.relay_threshold_listeners",
                "cluster.relay_threshold_listeners must be at least 1"
            );
        }
        let replica = if self.replica.trim().is_empty() {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "cp".to_string());
            format!("{host}-{}", std::process::id())
        } else {
            self.replica.trim().to_string()
        };
        Ok(Some(ClusterSettings {
            listen,
            advertise: self.advertise.clone(),
            ca_dir: self.ca_dir.clone(),
            etcd,
            replica,
            node_ttl: std::time::Duration::from_millis(self.node_ttl_ms),
            node_silence: std::time::Duration::from_millis(self.node_silence_ms),
            heartbeat: std::time::Duration::from_millis(self.heartbeat_ms),
            reconnect_grace: std::time::Duration::from_millis(self.reconnect_grace_ms),
            demo_tone: self.demo_tone,
            relay_threshold_listeners: self.relay_threshold_listeners,
            reserve_listeners: self.reserve_listeners,
            turn: TurnSettings::default(),
        }))
    }
}

/// A configuration checked for what serde cannot check.
#[derive(Debug, Clone)]
pub struct Validated {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// The built web app served at `/app/`.
    pub app_dir: PathBuf,
    /// `http.public_url` without its trailing `/`, when set.
    pub public_url: Option<String>,
    pub database_url: String,
    pub max_connections: u32,
    pub admin_token: Option<String>,
    pub cluster: Option<ClusterSettings>,
    pub media: MediaSettings,
    pub nowplaying: NowPlayingSettings,
    pub webhooks: WebhookSettings,
    pub realtime: RealtimeSettings,
    pub turn: TurnSettings,
}

impl ControlPlaneConfig {
    /// Checks every section; the first error found names its key.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        if !(1024..=64 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            invalid!(
                "http.max_body_bytes",
                "http.max_body_bytes = {} must be between 1024 and 67108864",
                self.http.max_body_bytes
            );
        }
        if self.database.max_connections == 0 || self.database.max_connections > 1000 {
            invalid!(
                "database.max_connections",
                "database.max_connections = {} must be between 1 and 1000",
                self.database.max_connections
            );
        }
        let token = self.auth.admin_token.trim();
        if !token.is_empty() && token.len() < 16 {
            invalid!(
                "auth.admin_token",
                "auth.admin_token is shorter than 16 characters; use a long random token"
            );
        }
        let turn = self.turn.validate()?;
        let mut cluster = self.cluster.validate()?;
        if let Some(c) = cluster.as_mut() {
            c.turn = turn.clone();
        }
        Ok(Validated {
            listen: self.http.listen,
            max_body_bytes: usize::try_from(self.http.max_body_bytes).unwrap_or(usize::MAX),
            app_dir: self.http.app_dir.clone(),
            public_url: self.http.public_url()?,
            database_url: self.database.url.clone(),
            max_connections: self.database.max_connections,
            admin_token: (!token.is_empty()).then(|| token.to_string()),
            cluster,
            media: self.media.validate()?,
            nowplaying: self.nowplaying.validate()?,
            webhooks: self.webhooks.validate()?,
            realtime: self.realtime.validate()?,
            turn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onda_shared::config::load_from;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn turn_section_defaults_file_env_and_errors() {
        let cfg: ControlPlaneConfig = load_from("", "cp.toml", Vec::new()).expect("loads");
        let v = cfg.validate().expect("valid");
        assert_eq!(v.turn, TurnSettings::default());
        assert_eq!(
            (v.turn.rotate_secs, v.turn.credential_ttl_secs),
            (86_400, 3600)
        );
        // The leader rotates with the same settings.
        assert_eq!(v.cluster.expect("cluster").turn, v.turn);
        let cfg: ControlPlaneConfig = load_from(
            "[turn]\nrotate_secs = 3600\nrealm = \"turn.example.com\"\n",
            "cp.toml",
            env(&[("ONDA_TURN_CREDENTIAL_TTL_SECS", "600")]),
        )
        .expect("loads");
        let turn = cfg.validate().expect("valid").turn;
        assert_eq!(
            (
                turn.rotate_secs,
                turn.credential_ttl_secs,
                turn.realm.as_str()
            ),
            (3600, 600, "turn.example.com")
        );
        for (text, key) in [
            ("[turn]\nrotate_secs = 10\n", "turn.rotate_secs"),
            (
                "[turn]\ncredential_ttl_secs = 0\n",
                "turn.credential_ttl_secs",
            ),
            ("[turn]\nrealm = \"two words\"\n", "turn.realm"),
            ("[turn]\nrealm = \"\"\n", "turn.realm"),
        ] {
            let cfg: ControlPlaneConfig = load_from(text, "cp.toml", Vec::new()).expect(text);
            let err = cfg.validate().expect_err(text);
            assert_eq!(err.key, key, "{text}");
            assert!(err.message.contains(key), "{err}");
        }
    }

    #[test]
    fn media_section_defaults_file_env_and_errors() {
        let cfg: ControlPlaneConfig = load_from("", "cp.toml", Vec::new()).expect("loads");
        let media = cfg.validate().expect("valid").media;
        assert_eq!(media.dir, std::path::PathBuf::from("media"));
        assert_eq!(media.max_upload_bytes, 200 * 1024 * 1024);

        let cfg: ControlPlaneConfig = load_from(
            "[media]\ndir = \"/srv/onda/media\"\nmax_upload_bytes = 4096\n",
            "cp.toml",
            env(&[("ONDA_MEDIA_MAX_UPLOAD_BYTES", "8192")]),
        )
        .expect("loads");
        let media = cfg.validate().expect("valid").media;
        assert_eq!(media.dir, std::path::PathBuf::from("/srv/onda/media"));
        assert_eq!(media.max_upload_bytes, 8192, "the environment wins");

        let err = load_from::<ControlPlaneConfig, _>("[media]\nsize = 1\n", "cp.toml", Vec::new())
            .expect_err("unknown key");
        assert!(err.to_string().contains("size"), "{err}");
        let err = load_from::<ControlPlaneConfig, _>(
            "",
            "cp.toml",
            env(&[("ONDA_MEDIA_DIRECTORY", "x")]),
        )
        .expect_err("unknown variable");
        assert!(err.to_string().contains("ONDA_MEDIA_DIRECTORY"), "{err}");

        for bad in ["[media]\ndir = \" \"\n", "[media]\nmax_upload_bytes = 10\n"] {
            let cfg: ControlPlaneConfig = load_from(bad, "cp.toml", Vec::new()).expect("loads");
            let err = cfg.validate().expect_err("invalid");
            assert!(err.to_string().starts_with("media."), "{err}");
        }
    }

    #[test]
    fn the_public_url_is_optional_checked_and_overridable() {
        let cfg: ControlPlaneConfig = load_from("", "cp.toml", Vec::new()).expect("loads");
        assert_eq!(cfg.validate().expect("valid").public_url, None);
        let cfg: ControlPlaneConfig = load_from(
            "[http]\npublic_url = \"https://a.example\"\n",
            "cp.toml",
            env(&[("ONDA_HTTP_PUBLIC_URL", "https://panel.example.com/onda/")]),
        )
        .expect("loads");
        assert_eq!(
            cfg.validate().expect("valid").public_url.as_deref(),
            Some("https://panel.example.com/onda"),
            "the environment wins, without the trailing slash"
        );
        let cfg: ControlPlaneConfig = load_from(
            "[http]\npublic_url = \"http://10.0.0.1:8080\"\n",
            "cp.toml",
            Vec::new(),
        )
        .expect("loads");
        assert_eq!(
            cfg.validate().expect("valid").public_url.as_deref(),
            Some("http://10.0.0.1:8080")
        );
        for bad in [
            "panel.example.com",
            "ftp://panel.example.com",
            "https://panel.example.com/?a=1",
            "https://panel.example.com/#x",
            "https://user@panel.example.com",
        ] {
            let text = format!("[http]\npublic_url = \"{bad}\"\n");
            let cfg: ControlPlaneConfig = load_from(&text, "cp.toml", Vec::new()).expect("loads");
            let err = cfg.validate().expect_err(bad);
            assert!(err.to_string().contains("http.public_url"), "{err}");
        }
    }

    /// Each section's check names the key it refuses, in the error's `key` and its sentence.
    #[test]
    fn each_section_names_the_key_it_refuses() {
        for (text, key) in [
            ("[http]\nmax_body_bytes = 10\n", "http.max_body_bytes"),
            (
                "[media]\nunsent_attachment_grace_secs = 0\n",
                "media.unsent_attachment_grace_secs",
            ),
            (
                "[database]\nmax_connections = 0\n",
                "database.max_connections",
            ),
            ("[auth]\nadmin_token = \"short\"\n", "auth.admin_token"),
            (
                "[cluster]\ncoordinator = \"zookeeper\"\n",
                "cluster.coordinator",
            ),
            (
                "[cluster]\ncoordinator = \"etcd\"\n",
                "cluster.etcd_endpoints",
            ),
            ("[cluster]\nheartbeat_ms = 4000\n", "cluster.heartbeat_ms"),
            (
                "[media]\nprobe_slots_per_tenant = 300\n",
                "media.probe_slots_per_tenant",
            ),
            (
                "[nowplaying]\nmax_subscribers = 0\n",
                "nowplaying.max_subscribers",
            ),
            ("[webhooks]\ntimeout_ms = 5\n", "webhooks.timeout_ms"),
            (
                "[webhooks]\nconcurrency = 2\nconcurrency_per_tenant = 3\n",
                "webhooks.concurrency_per_tenant",
            ),
            (
                "[realtime]\nusage_flush_secs = 0\n",
                "realtime.usage_flush_secs",
            ),
        ] {
            let cfg: ControlPlaneConfig = load_from(text, "cp.toml", Vec::new()).expect(text);
            let err = cfg.validate().expect_err(text);
            assert_eq!(err.key, key, "{text}");
            assert!(err.message.contains(key), "{err}");
        }
    }

    /// Listen addresses and directories are typed when the file is read: a bad address stops
    /// the load with the key and the value, and an empty `cluster.listen` (file or environment)
    /// turns the cluster off.
    #[test]
    fn addresses_and_directories_are_read_as_what_they_are() {
        let err = load_from::<ControlPlaneConfig, _>(
            "[http]\nlisten = \"127.0.0.1\"\n",
            "cp.toml",
            Vec::new(),
        )
        .expect_err("no port");
        let err = err.to_string();
        assert!(
            err.contains("http.listen")
                && err.contains("\"127.0.0.1\": invalid socket address syntax"),
            "{err}"
        );
        let err = load_from::<ControlPlaneConfig, _>(
            "",
            "cp.toml",
            env(&[("ONDA_CLUSTER_LISTEN", "0.0.0.0:x")]),
        )
        .expect_err("bad port");
        assert!(err.to_string().contains("cluster.listen"), "{err}");

        let cfg: ControlPlaneConfig = load_from(
            "[cluster]\nlisten = \"127.0.0.1:7000\"\nca_dir = \"/etc/onda/ca\"\n",
            "cp.toml",
            Vec::new(),
        )
        .expect("loads");
        let cluster = cfg.validate().expect("valid").cluster.expect("on");
        assert_eq!(cluster.listen, SocketAddr::from(([127, 0, 0, 1], 7000)));
        assert_eq!(cluster.ca_dir, PathBuf::from("/etc/onda/ca"));
        for (text, vars) in [
            ("[cluster]\nlisten = \"\"\n", Vec::new()),
            ("", env(&[("ONDA_CLUSTER_LISTEN", "")])),
        ] {
            let cfg: ControlPlaneConfig = load_from(text, "cp.toml", vars).expect("loads");
            assert!(cfg.validate().expect("valid").cluster.is_none(), "{text}");
        }
    }

    /// `webhooks.ca_file`: empty means the system's roots only; a file that is missing or
    /// holds no certificate is refused by name; a PEM certificate is read.
    #[test]
    fn webhooks_ca_file_is_read_and_checked() {
        let cfg: ControlPlaneConfig = load_from("", "cp.toml", Vec::new()).expect("loads");
        assert!(
            cfg.validate()
                .expect("valid")
                .webhooks
                .extra_roots
                .is_empty()
        );

        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let pair = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["ca.example".into()])
            .expect("params")
            .self_signed(&pair)
            .expect("cert");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.pem()).expect("write");
        let missing = dir.path().join("missing.pem");
        for (path, says) in [(&missing, "cannot read"), (&empty, "no certificate")] {
            let cfg: ControlPlaneConfig = load_from(
                "",
                "cp.toml",
                env(&[("ONDA_WEBHOOKS_CA_FILE", &path.display().to_string())]),
            )
            .expect("loads");
            let err = cfg.validate().expect_err("refused").to_string();
            assert!(
                err.contains("webhooks.ca_file") && err.contains(says),
                "{err}"
            );
        }
        let text = format!("[webhooks]\nca_file = {:?}\n", good.display().to_string());
        let cfg: ControlPlaneConfig = load_from(&text, "cp.toml", Vec::new()).expect("loads");
        assert_eq!(cfg.validate().expect("valid").webhooks.extra_roots.len(), 1);
    }
}

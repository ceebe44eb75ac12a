//! The Onda edge node: the data plane every listener touches. An Icecast 2.4-compatible server
//! (sources by PUT/SOURCE, listeners with ICY metadata, admin and status routes, fallback mounts,
//! relays) with one shared buffer per mount. It takes a typed [`EdgeConfig`] and knows nothing of
//! QUIC or the control plane: the agent drives it through [`Edge::apply`] and [`Edge::stats`],
//! and `onda edge --config edge.toml` runs it alone as a drop-in Icecast replacement. Live video
//! comes in over RTMP and goes out as HLS ([`live`]).
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod autodj;
pub mod chunked;
pub mod config;
pub mod cors;
pub mod frames;
pub mod head;
pub mod icy;
mod listener;
pub mod live;
pub mod metrics;
pub mod mount;
pub mod ogg;
pub mod relay;
pub mod server;
mod source;
pub mod usage;

pub use config::{EdgeConfig, MountConfig, RelayConfig};

use anyhow::Context as _;
use server::Shared;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::task::JoinHandle;

pub(crate) use onda_shared::secret::constant_time_eq;

/// What a source feeding a mount looks like from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStats {
    pub connected_since: SystemTime,
    pub content_type: String,
    pub bitrate: u32,
    pub title: String,
    pub relay: bool,
    pub bytes_received: u64,
}

/// One mount's numbers, for the agent and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStats {
    pub path: String,
    /// Connections on the mount, relay edges pulling it included (what Icecast counts).
    pub listeners: u64,
    /// Listeners proper: relay pulls presenting the mount's relay key left out.
    pub audience: u64,
    pub peak: u64,
    pub bytes_sent: u64,
    pub connections: u64,
    pub dropped_slow: u64,
    pub refused_full: u64,
    pub source: Option<SourceStats>,
}

/// One live stream's numbers, for the agent and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStats {
    pub name: String,
    /// Playback sessions active now.
    pub viewers: u64,
    /// A publisher streams into it now.
    pub publishing: bool,
}

/// A running edge node.
pub struct Edge {
    shared: Arc<Shared>,
    addr: SocketAddr,
    rtmp_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl Edge {
    /// Binds and starts serving `config`.
    pub async fn start(config: EdgeConfig) -> anyhow::Result<Edge> {
        let v = config.validate()?;
        let listener = tokio::net::TcpListener::bind(v.listen).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "cannot listen on {}: port {} is already in use; choose another with http.listen or ONDA_HTTP_LISTEN",
                    v.listen,
                    v.listen.port()
                )
            } else {
                anyhow::anyhow!("cannot listen on {}: {e}", v.listen)
            }
        })?;
        let addr = listener.local_addr()?;
        let rtmp = match v.rtmp {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen for RTMP on {a}: {e}; choose another address with rtmp.listen or ONDA_RTMP_LISTEN"
                )
            })?),
            None => None,
        };
        let rtmp_addr = rtmp.as_ref().map(|l| l.local_addr()).transpose()?;
        let shared = Arc::new(Shared::new(v.config)?);
        shared.sync_relays();
        shared.sync_autodj();
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        tracing::info!("edge listening on http://{addr}");
        if let Some(l) = rtmp {
            tokio::spawn(live::rtmp::serve(l, shared.clone()));
            if let Some(a) = rtmp_addr {
                tracing::info!("RTMP ingest on rtmp://{a}");
            }
        }
        Ok(Edge {
            shared,
            addr,
            rtmp_addr,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where RTMP publishers connect; None without `rtmp.listen`.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp_addr
    }

    /// Applies a new configuration at runtime: added mounts appear, removed ones end, changed
    /// ones take the new settings; listeners of unchanged mounts are not disturbed. The listen
    /// address cannot change at runtime.
    pub fn apply(&self, config: EdgeConfig) -> anyhow::Result<()> {
        let v = config.validate()?;
        self.shared.set_config(v.config);
        self.shared.sync_relays();
        self.shared.sync_autodj();
        Ok(())
    }

    pub fn stats(&self) -> Vec<MountStats> {
        self.shared
            .mounts()
            .iter()
            .map(|m| MountStats {
                path: m.path.clone(),
                listeners: m.listener_count(),
                audience: m.usage.current(),
                peak: u64::try_from(m.counters.peak.get()).unwrap_or(0),
                bytes_sent: m.counters.bytes_sent.get(),
                connections: m.counters.connections.get(),
                dropped_slow: m.counters.dropped_slow.get(),
                refused_full: m.counters.refused_full.get(),
                source: m.session().map(|s| SourceStats {
                    connected_since: s.connected_at,
                    content_type: s.info.content_type.clone(),
                    bitrate: s.info.bitrate,
                    title: s.metadata().title.clone(),
                    relay: s.info.relay,
                    bytes_received: s.end(),
                }),
            })
            .collect()
    }

    pub fn live_stats(&self) -> Vec<LiveStats> {
        let now = std::time::Instant::now();
        self.shared
            .live
            .streams()
            .iter()
            // Renditions are part of their stream.
            .filter(|s| s.parent.is_none())
            .map(|s| LiveStats {
                name: s.name.clone(),
                viewers: s.viewers.current(now),
                publishing: s.is_live(),
            })
            .collect()
    }

    /// Serves another component's metrics (the agent's) on this edge's `/metrics` too.
    pub fn register_metric(&self, c: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        self.shared.metrics.register(c)
    }

    /// Listener usage of every mount since the previous call (see [`usage`]): the agent meters
    /// with it. Relay pulls are not in it.
    pub fn take_usage(&self) -> Vec<usage::MountUsage> {
        self.shared.take_usage()
    }

    /// [`Edge::take_usage`] as a function that outlives a borrow of the edge (for a metering
    /// task, and for the last take after [`Edge::shutdown`]).
    pub fn usage_taker(&self) -> impl Fn() -> Vec<usage::MountUsage> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.take_usage()
    }

    /// What each AutoDJ plays now, by AutoDJ name.
    pub fn now_playing(&self) -> Vec<(String, autodj::NowPlaying)> {
        self.shared.now_playing()
    }

    /// Stops accepting and disconnects everyone.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        for m in self.shared.mounts() {
            if let Some(s) = m.session() {
                s.kill();
                m.detach(&s);
            }
        }
        let _ = self.task.await;
    }
}

/// `onda edge --config edge.toml`: serve until SIGINT/SIGTERM.
pub async fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config: EdgeConfig = onda_shared::config::load(config_path)?;
    let edge = Edge::start(config)
        .await
        .context("cannot start the edge node")?;
    onda_shared::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

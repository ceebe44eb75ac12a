//! The Onda node daemon: joins the cluster over QUIC (a one-time token, then mutual TLS), applies
//! each desired state it receives to an in-process edge node without disturbing unchanged
//! mounts, and reports heartbeats (host metrics, every mount's listeners and source) and source
//! events. It keeps serving its last desired state while no control plane answers, also across
//! its own restarts.
#![forbid(unsafe_code)]

pub mod apply;
pub mod config;
pub mod host;
pub mod identity;
pub mod media;
pub mod metrics;
pub mod session;
pub mod turn;
pub mod usage;

use anyhow::Context as _;
use config::AgentConfig;
use onda_edge::{Edge, EdgeConfig};
use onda_shared::cluster::proto::{DesiredState, MountReport, NodeAdvert, TrackPlaying};
use onda_shared::cluster::tls;
use onda_shared::cluster::token::JoinToken;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve control plane address {addr:?}"))?
        .next()
        .with_context(|| format!("control plane address {addr:?} resolves to nothing"))
}

/// A running node.
pub struct Agent {
    pub config: AgentConfig,
    pub identity: identity::Identity,
    pub advert: NodeAdvert,
    pub edge: Edge,
    pub desired: DesiredState,
    /// What of `desired` the edge took, and what it refused (reported in heartbeats).
    pub admitted: apply::Admitted,
    pub media: media::MediaCache,
    state_dir: PathBuf,
    base: EdgeConfig,
    tones: apply::Tones,
    pub host: host::HostSampler,
    /// Edge path → (station, station mount), for usage reports.
    paths: usage::PathMap,
    pub spool: std::sync::Arc<std::sync::Mutex<usage::Spool>>,
    /// The last sealed report's sequence number: sessions send what is new.
    pub sealed: tokio::sync::watch::Sender<u64>,
    pub metrics: metrics::AgentMetrics,
    /// coturn's executable when the node runs TURN (`[turn]`).
    turn_binary: Option<PathBuf>,
    /// The TURN relay, while the agent serves.
    pub turn: Option<turn::Turn>,
    /// Relayed TURN bytes by tenant, from coturn's log to the usage meter.
    turn_usage: turn::meter::Tally,
}

impl Agent {
    fn client_config(&self) -> anyhow::Result<quinn::ClientConfig> {
        let ca = tls::certs_from_pem(&self.identity.ca_pem)?
            .into_iter()
            .next()
            .context("no CA certificate in identity.json")?;
        tls::client_config_mtls(
            ca,
            tls::certs_from_pem(&self.identity.cert_pem)?,
            tls::key_from_pem(&self.identity.key_pem)?,
            Duration::from_secs(10),
        )
    }

    /// Applies a desired state to the edge and the tone sources, and keeps it on disk. What the
    /// edge refuses of it is left out and kept in `admitted.rejected`; everything else applies.
    pub fn apply(&mut self, desired: DesiredState) -> anyhow::Result<()> {
        // Known before any listener of a new mount can arrive, so its usage has a station.
        usage::remember_paths(&self.paths, &desired);
        // The TURN secrets do not depend on the edge: they apply even if the edge cannot.
        if let Some(t) = &self.turn {
            t.set(desired.turn.as_ref());
        }
        self.apply_admitted(&desired)
            .with_context(|| format!("generation {}", desired.generation))?;
        identity::save_desired(&self.state_dir, &desired)?;
        tracing::info!(
            "applied generation {} ({} station(s), {} refused)",
            desired.generation,
            self.admitted.desired.stations.len(),
            self.admitted.rejected.len()
        );
        self.desired = desired;
        Ok(())
    }

    /// Starts the TURN relay when the node runs one, with the secrets of the state it serves.
    fn start_turn(&mut self) -> anyhow::Result<()> {
        let Some(binary) = self.turn_binary.clone() else {
            return Ok(());
        };
        let t = turn::Turn::start(
            self.config.turn.clone(),
            binary,
            self.state_dir.join("turn"),
            self.advert.turn_urls.clone(),
            self.metrics.turn.clone(),
            self.turn_usage.clone(),
        )?;
        t.set(self.desired.turn.as_ref());
        self.turn = Some(t);
        Ok(())
    }

    /// Applies the current desired state again (new media files arrived).
    pub fn reconfigure(&mut self) -> anyhow::Result<()> {
        let desired = self.desired.clone();
        self.apply_admitted(&desired)
    }

    /// Applies to the edge and the tones what the edge takes of `desired`.
    fn apply_admitted(&mut self, desired: &DesiredState) -> anyhow::Result<()> {
        let admitted = apply::admit(&self.base, desired, &self.media)?;
        let cfg = apply::edge_config(&self.base, &admitted.desired, &self.media)?;
        self.edge.apply(cfg)?;
        self.tones.sync(&admitted.desired, self.edge.addr().port());
        if admitted.rejected != self.admitted.rejected {
            for r in &admitted.rejected {
                tracing::warn!("not applied: {}", r.reason);
            }
        }
        self.admitted = admitted;
        Ok(())
    }

    /// What each station's AutoDJ plays now, by station id.
    pub fn now_playing(&self) -> Vec<TrackPlaying> {
        let by_slug: std::collections::BTreeMap<&str, &str> = self
            .admitted
            .desired
            .stations
            .iter()
            .map(|s| (s.slug.as_str(), s.station_id.as_str()))
            .collect();
        self.edge
            .now_playing()
            .into_iter()
            .filter_map(|(slug, np)| {
                Some(TrackPlaying {
                    station_id: by_slug.get(slug.as_str())?.to_string(),
                    started_at_ms: np
                        .started_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    title: np.title,
                    artist: np.artist,
                    track_title: np.track_title,
                    media_sha256: np.sha256,
                    duration_ms: np
                        .duration
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    live: np.live,
                    streamer: np.streamer,
                    next_title: np.next,
                    request_id: np.request_id,
                    next_request_id: np.next_request_id,
                })
            })
            .collect()
    }

    /// The host's readings for a heartbeat, also kept as metrics.
    pub fn sample_host(&mut self) -> onda_shared::cluster::proto::HostMetrics {
        let h = self.host.sample();
        self.metrics.host(&h);
        self.metrics.disk(&self.state_dir);
        h
    }

    /// Each mount's listeners and source, and each live stream's viewers and publisher (as
    /// the edge path `/hls/{slug}`, on the air while a publisher streams).
    pub fn mount_reports(&self) -> Vec<MountReport> {
        let stations = apply::station_of_paths(&self.admitted.desired);
        let mounts = self.edge.stats().into_iter().filter_map(|m| {
            Some(MountReport {
                station_id: stations.get(&m.path)?.clone(),
                on_air: m.source.is_some(),
                listeners: m.audience,
                path: m.path,
            })
        });
        let live = self.edge.live_stats().into_iter().filter_map(|l| {
            let spec = self
                .admitted
                .desired
                .live_streams
                .iter()
                .find(|s| s.slug == l.name)?;
            Some(MountReport {
                station_id: spec.stream_id.clone(),
                path: format!("/hls/{}", l.name),
                listeners: l.viewers,
                on_air: l.publishing,
            })
        });
        mounts.chain(live).collect()
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// `onda agent --config agent.toml [--join TOKEN]`: join if needed, then serve until a signal.
pub async fn run(config_path: Option<&Path>, join: Option<&str>) -> anyhow::Result<()> {
    let config: AgentConfig = onda_shared::config::load(config_path)?;
    config.validate()?;
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        onda_shared::signal::shutdown_signal().await;
        signal.cancel();
    });
    let agent = start(config, join).await?;
    serve(agent, stop).await
}

/// Makes this process end (SIGTERM, so the edge stops cleanly) when the process `parent` that
/// started it dies, even by SIGKILL: `onda dev` passes its pid so no agent outlives it. Fails
/// when `parent` is already gone, since the death signal would then never come.
pub fn exit_with_parent(parent: u32) -> anyhow::Result<()> {
    use rustix::process::{Signal, getppid, set_parent_process_death_signal};
    set_parent_process_death_signal(Some(Signal::TERM))
        .map_err(|e| anyhow::anyhow!("cannot ask for a parent-death signal: {e}"))?;
    // Checked after the prctl: a parent that died in between is seen here, not missed.
    let now = getppid().map_or(0, |p| p.as_raw_nonzero().get().unsigned_abs());
    if now != parent {
        anyhow::bail!("the parent process {parent} has already exited");
    }
    Ok(())
}

/// Joins the cluster and exits (`onda agent --join TOKEN --join-only`); a node that already
/// joined does nothing.
pub async fn join_only(config_path: Option<&Path>, join: Option<&str>) -> anyhow::Result<()> {
    let config: AgentConfig = onda_shared::config::load(config_path)?;
    config.validate()?;
    let state_dir = config.node.state_dir.clone();
    if let Some(id) = identity::load(&state_dir)? {
        println!("already joined as {}", id.node_id);
        return Ok(());
    }
    let agent = start(config, join).await?;
    println!("joined as {}", agent.identity.node_id);
    Ok(())
}

/// What the node tells the control plane about itself: its name, region and labels, where
/// listeners and publishers reach it (the configured public URLs, else the addresses the edge
/// listens on when those are specific), and its capacity.
fn advert(config: &AgentConfig, edge: &Edge, turn: Option<&Path>) -> anyhow::Result<NodeAdvert> {
    let bound = edge.addr();
    // The advert's URLs are bases the control plane appends paths to: no trailing slash.
    let public_url = if let Some(url) = &config.node.public_url {
        url.as_str().trim_end_matches('/').to_string()
    } else if bound.ip().is_unspecified() {
        anyhow::bail!(
            "node.public_url is empty and the edge listens on {bound}: set node.public_url to the \
             URL listeners reach this node at (e.g. http://edge1.example.com:{})",
            bound.port()
        );
    } else {
        format!("http://{bound}")
    };
    let rtmp_url = match (edge.rtmp_addr(), &config.node.rtmp_url) {
        (None, _) => String::new(),
        (Some(_), Some(url)) => url.as_str().trim_end_matches('/').to_string(),
        (Some(a), None) if a.ip().is_unspecified() => anyhow::bail!(
            "node.rtmp_url is empty and RTMP listens on {a}: set node.rtmp_url to the URL \
             publishers reach this node at (e.g. rtmp://edge1.example.com:{})",
            a.port()
        ),
        (Some(a), None) => format!("rtmp://{a}"),
    };
    let turn_urls = match turn {
        Some(_) => turn::urls(&config.turn, &turn::public_host(&config.turn, &public_url)?),
        None => Vec::new(),
    };
    Ok(NodeAdvert {
        name: if config.node.name.is_empty() {
            default_name()
        } else {
            config.node.name.clone()
        },
        region: config.node.region.clone(),
        labels: config.node.labels.clone(),
        edge_url: public_url,
        rtmp_url,
        turn_urls,
        capacity_listeners: config.node.capacity_listeners,
        capacity_mbps: config.node.capacity_mbps,
    })
}

/// The node's identity: the one it has, else the one joining with `join` gives it (saved).
async fn identity(
    config: &AgentConfig,
    state_dir: &Path,
    join: Option<&str>,
    advert: &NodeAdvert,
) -> anyhow::Result<identity::Identity> {
    let identity = match (identity::load(state_dir)?, join) {
        (Some(id), Some(_)) => {
            tracing::warn!(
                "this node already joined as {}; ignoring --join (remove {} to join again)",
                id.node_id,
                identity::identity_path(state_dir).display()
            );
            id
        }
        (Some(id), None) => id,
        (None, Some(token)) => {
            let token: JoinToken = token.parse()?;
            let mut addrs = Vec::new();
            for a in &config.control_plane.addresses {
                addrs.push(resolve(a).await?);
            }
            let id = identity::join(&token, &addrs, advert).await?;
            identity::write_private(
                &identity::identity_path(state_dir),
                &serde_json::to_vec_pretty(&id)?,
            )?;
            tracing::info!(
                "joined the cluster as node {} ({})",
                id.node_id,
                advert.name
            );
            id
        }
        (None, None) => anyhow::bail!(
            "this node has not joined a cluster yet: run it once with --join TOKEN (an admin \
             creates one with POST /v1/join-tokens)"
        ),
    };
    Ok(identity)
}

/// Starts the edge (with the last desired state on disk) and joins when the node has no
/// identity yet.
pub async fn start(config: AgentConfig, join: Option<&str>) -> anyhow::Result<Agent> {
    let state_dir = config.node.state_dir.clone();
    if join.is_none() && identity::load(&state_dir)?.is_none() {
        anyhow::bail!(
            "this node has not joined a cluster yet: run it once with --join TOKEN (an admin \
             creates one with POST /v1/join-tokens)"
        );
    }
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let base = EdgeConfig {
        http: config.http.clone(),
        admin: config.admin.clone(),
        limits: config.limits.clone(),
        rtmp: config.rtmp.clone(),
        hls: onda_edge::config::HlsConfig {
            // The node's disk rather than /tmp, which may be memory.
            segment_dir: if config.hls.segment_dir.as_os_str().is_empty() {
                state_dir.join("hls")
            } else {
                config.hls.segment_dir.clone()
            },
            ..config.hls.clone()
        },
        media: onda_edge::config::MediaConfig {
            cache_dir: state_dir.join("renditions"),
        },
        ..EdgeConfig::default()
    };
    let media = media::MediaCache::new(state_dir.join("media"));
    let spool = usage::Spool::open(&state_dir.join("usage"))?;
    let desired = identity::load_desired(&state_dir).unwrap_or_default();
    // What the edge takes of the last desired state (the rest is refused again just below).
    let admitted = apply::admit(&base, &desired, &media)?;
    let edge = match Edge::start(apply::edge_config(&base, &admitted.desired, &media)?).await {
        Ok(edge) => edge,
        // What admit let through is the node's own settings: a fix in agent.toml, not a retry.
        Err(onda_edge::EdgeError::Config(e)) => anyhow::bail!(
            "the node's edge settings are not usable ({} in agent.toml): {e}",
            e.key
        ),
        Err(e) => return Err(anyhow::Error::new(e).context("cannot start the edge")),
    };
    let turn_binary = turn::binary(&config.turn)?;
    let advert = advert(&config, &edge, turn_binary.as_deref())?;
    let identity = identity(&config, &state_dir, join, &advert).await?;
    let agent_metrics = metrics::AgentMetrics::register(&edge)?;
    agent_metrics
        .spool
        .set(i64::try_from(spool.depth()).unwrap_or(i64::MAX));
    let mut agent = Agent {
        metrics: agent_metrics,
        config,
        identity,
        advert,
        edge,
        desired: DesiredState::default(),
        admitted: apply::Admitted::default(),
        media,
        state_dir,
        base,
        tones: apply::Tones::default(),
        host: host::HostSampler::default(),
        paths: usage::PathMap::default(),
        spool: std::sync::Arc::new(std::sync::Mutex::new(spool)),
        sealed: tokio::sync::watch::channel(0).0,
        turn_binary,
        turn: None,
        turn_usage: turn::meter::Tally::default(),
    };
    if desired.generation > 0 {
        tracing::info!(
            "serving the last desired state (generation {}) until a control plane answers",
            desired.generation
        );
        agent.apply(desired)?;
    }
    tracing::info!(
        "node {} ({}) edge on {}",
        agent.advert.name,
        agent.identity.node_id,
        agent.advert.edge_url
    );
    Ok(agent)
}

/// Talks to the control planes until `stop`, then stops the edge.
/// Meters usage meanwhile; the last checkpoint is taken once the edge has stopped, so every
/// listener's time is in the spool before the process exits.
pub async fn serve(mut agent: Agent, stop: CancellationToken) -> anyhow::Result<()> {
    agent.start_turn()?;
    let meter_stop = CancellationToken::new();
    let meter = tokio::spawn(usage::meter(
        agent.edge.usage_taker(),
        agent.turn_usage.clone(),
        agent.paths.clone(),
        agent.spool.clone(),
        agent.sealed.clone(),
        agent.metrics.spool.clone(),
        agent.config.usage.clone(),
        meter_stop.clone(),
    ));
    let result = session::run(&mut agent, &stop).await;
    agent.tones.stop_all();
    if let Some(t) = agent.turn.take() {
        t.stop().await;
    }
    meter_stop.cancel();
    let meter = meter.await;
    agent.edge.shutdown().await;
    match meter {
        Ok(m) => m.finish(),
        Err(e) => tracing::error!("the usage meter failed: {e}"),
    }
    tracing::info!("stopped");
    result
}

//! The cluster side of the control plane: the CA ([`ca`]), the QUIC control channel nodes connect
//! to ([`channel`]), the leader's reconcile loop that runs the scheduler and writes each node's
//! desired state ([`leader`], which decides each round with [`round`]), and the cached view of
//! where stations play that the redirector and the API read ([`view`]).
//!
//! Data flow: nodes' heartbeats and events become `observed` keys with the node's lease in the
//! coordinator; the leader reads them with the catalogue from the database, places stations and
//! writes `placement` and per-node `desired` keys; the replica holding a node's connection
//! watches that node's `desired` key and sends it. Every replica serves the API and the
//! redirector from the same keys.

pub mod ca;
pub mod channel;
pub mod leader;
pub mod refusals;
pub mod round;
pub mod shares;
pub mod store;
pub mod usage_vet;
pub mod view;

use crate::config::ClusterSettings;
use crate::coordinator::Coordinator;
use crate::coordinator::etcd::EtcdCoordinator;
use crate::coordinator::memory::MemoryCoordinator;
use crate::db::Db;
use anyhow::Context as _;
use onda_shared::cluster::proto::{HostMetrics, MountReport, Rejected};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Coordinator keys (under the etcd prefix when etcd is used).
pub mod keys {
    /// `alive/{node}`: present while the node's lease lives.
    pub const ALIVE: &str = "/nodes/alive/";
    /// `observed/{node}`: the node's last heartbeat (JSON [`super::Observed`]), same lease.
    pub const OBSERVED: &str = "/nodes/observed/";
    /// `desired/{node}`: what the leader wants the node to carry (JSON `DesiredState`).
    pub const DESIRED: &str = "/nodes/desired/";
    /// `revoked/{node}`: tells the replica holding the node's connection to cut it.
    pub const REVOKED: &str = "/nodes/revoked/";
    /// Everything under `/nodes/` is watched by the leader and the views.
    pub const NODES: &str = "/nodes/";
    /// The scheduler's placement (JSON `scheduler::Placement`).
    pub const PLACEMENT: &str = "/placement";
    /// The election among replicas.
    pub const LEADER: &str = "/leader";
    /// `nowplaying/{station}`: what the station's origin last reported playing (JSON
    /// `TrackPlaying`), written by the replica that received the report.
    pub const NOW_PLAYING: &str = "/nowplaying/";
}

/// What a node last reported, as stored in the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub replica: String,
    pub host: HostMetrics,
    pub mounts: Vec<MountReport>,
    pub applied_generation: u64,
    /// Stations and live streams of its desired state the node's edge refused (protocol 3).
    #[serde(default)]
    pub rejected: Vec<Rejected>,
}

/// What the leader and the views read each round: the catalogue and nodes from the database,
/// placement, liveness and observations from the coordinator.
#[derive(Debug)]
pub struct ClusterState {
    pub catalog: Vec<crate::db::cluster::CatalogStation>,
    pub nodes: Vec<onda_shared::api::Node>,
    pub placement: crate::scheduler::Placement,
    pub alive: std::collections::BTreeSet<String>,
    pub observed: std::collections::BTreeMap<String, Observed>,
    pub now_playing: std::collections::BTreeMap<String, onda_shared::cluster::proto::TrackPlaying>,
}

/// Reads a [`ClusterState`]. The placement is read before the observations: the leader drops a
/// node a station is leaving only after it saw the new node on the air, so observations read
/// after the placement always show that node on the air.
pub async fn read_state(cluster: &Cluster) -> anyhow::Result<ClusterState> {
    let (catalog, nodes) = {
        let mut c = cluster.db.conn().await?;
        (
            crate::db::cluster::catalog(&mut c).await?,
            crate::db::nodes::all(&mut c).await?,
        )
    };
    let store = &cluster.store;
    let placement = store.placement().await?.unwrap_or_default();
    let alive = store.alive().await?;
    let observed = store.observed().await?;
    let now_playing = store.now_playing().await?;
    Ok(ClusterState {
        catalog,
        nodes,
        placement,
        alive,
        observed,
        now_playing,
    })
}

/// Shared by the channel, the leader loop, the view and the API.
pub struct Cluster {
    pub db: Db,
    pub coord: Arc<dyn Coordinator>,
    /// The coordinator's cluster keys, typed (see [`store`]).
    pub store: store::Store,
    pub ca: ca::ClusterCa,
    pub settings: ClusterSettings,
    pub view: view::View,
    /// Bumped whenever a view refresh changes what a now-playing answer shows (track, listeners),
    /// so push feeds send it again.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Where the control channel is bound.
    pub quic_addr: SocketAddr,
    /// The media store nodes fetch AutoDJ files from.
    pub media: Option<Arc<crate::media::MediaStore>>,
    pub metrics: crate::metrics::ClusterMetrics,
    /// Refusals of nodes' requests: counted, and logged at most once per kind and 10 s.
    pub refusals: refusals::RefusalLog,
    leading: AtomicBool,
    started: tokio::time::Instant,
    /// Milliseconds after `started` when this replica's own runtime last fell behind (see
    /// [`watch_stalls`]); 0: never.
    stalled_at_ms: std::sync::atomic::AtomicU64,
}

/// How late a 100 ms tick of this replica's runtime must be to count as a stall of its own.
const STALL: std::time::Duration = std::time::Duration::from_millis(500);

/// Notes when this replica's runtime falls behind (a tick 500 ms late): its control
/// connections may then time out although the nodes are fine, and it must not take them for
/// dead (see [`Cluster::stalled_within`]).
async fn watch_stalls(cluster: Arc<Cluster>, stop: CancellationToken) {
    let tick = std::time::Duration::from_millis(100);
    loop {
        let t = tokio::time::Instant::now();
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = stop.cancelled() => return,
        }
        if t.elapsed() > tick + STALL {
            let at = u64::try_from(cluster.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            cluster.stalled_at_ms.store(at.max(1), Ordering::Relaxed);
        }
    }
}

impl Cluster {
    /// Whether this replica's own runtime stalled within the last `window`.
    pub fn stalled_within(&self, window: std::time::Duration) -> bool {
        let at = self.stalled_at_ms.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis();
        at > 0 && now.saturating_sub(u128::from(at)) <= window.as_millis()
    }

    /// The media store's file with this SHA-256, if it has one.
    pub fn blob_path(&self, sha256: &str) -> Option<std::path::PathBuf> {
        self.media.as_ref()?.blob_path(sha256)
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.settings.replica)
    }
}

impl Cluster {
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// The addresses a joining node should be told about.
    pub fn advertised(&self) -> Vec<String> {
        if self.settings.advertise.is_empty() {
            vec![self.quic_addr.to_string()]
        } else {
            self.settings.advertise.clone()
        }
    }
}

/// The cluster running in the background of a control plane.
pub struct Running {
    pub cluster: Arc<Cluster>,
    pub quic_addr: SocketAddr,
    stop: CancellationToken,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.endpoint.close(0u32.into(), b"control plane stopping");
        for t in self.tasks {
            let _ = t.await;
        }
        if self.cluster.is_leader() {
            let _ = self.cluster.coord.resign(keys::LEADER).await;
        }
    }
}

/// Loads the CA, connects the coordinator, binds the QUIC endpoint, and starts the channel, the
/// leader loop and the view.
pub async fn start(
    db: Db,
    settings: ClusterSettings,
    media: Option<Arc<crate::media::MediaStore>>,
    metrics: crate::metrics::ClusterMetrics,
) -> anyhow::Result<Running> {
    let ca = ca::ClusterCa::load_or_create(&settings.ca_dir)?;
    {
        let mut conn = db.conn().await?;
        let agreed = crate::db::cluster::agree_fact(&mut conn, "ca_sha256", &ca.sha256).await?;
        if agreed != ca.sha256 {
            anyhow::bail!(
                "the cluster CA in {} (sha256 {}) is not the cluster's CA (sha256 {agreed}, \
                 recorded in the database by the first control plane); copy ca.crt and ca.key \
                 from that control plane's CA directory",
                settings.ca_dir.display(),
                ca.sha256
            );
        }
    }
    let coord: Arc<dyn Coordinator> = match &settings.etcd {
        Some((endpoints, prefix)) => Arc::new(EtcdCoordinator::connect(endpoints, prefix).await?),
        None => Arc::new(MemoryCoordinator::start()),
    };
    let (chain, key) = ca.server_identity()?;
    let server_config = onda_shared::cluster::tls::server_config(
        ca.cert_der.clone(),
        chain,
        key,
        settings.node_silence,
    )?;
    let endpoint = quinn::Endpoint::server(server_config, settings.listen).with_context(|| {
        format!(
            "cannot listen on {} (UDP) for the control channel; choose another address with \
             cluster.listen or ONDA_CLUSTER_LISTEN",
            settings.listen
        )
    })?;
    let quic_addr = endpoint.local_addr()?;
    let cluster = Arc::new(Cluster {
        db,
        store: store::Store::new(coord.clone(), metrics.store_corrupt.clone()),
        coord,
        ca,
        view: view::View::default(),
        changed: tokio::sync::watch::Sender::new(0),
        quic_addr,
        media,
        refusals: refusals::RefusalLog::new(
            metrics.node_refusals.clone(),
            std::time::Duration::from_secs(10),
        ),
        metrics,
        settings,
        leading: AtomicBool::new(false),
        started: tokio::time::Instant::now(),
        stalled_at_ms: std::sync::atomic::AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(channel::serve(
            endpoint.clone(),
            cluster.clone(),
            stop.clone(),
        )),
        tokio::spawn(leader::run(cluster.clone(), stop.clone())),
        tokio::spawn(view::run(cluster.clone(), stop.clone())),
        tokio::spawn(watch_stalls(cluster.clone(), stop.clone())),
    ];
    tracing::info!(
        "control channel listening on quic://{quic_addr} (replica {}, CA sha256 {})",
        cluster.settings.replica,
        cluster.ca.sha256
    );
    Ok(Running {
        cluster,
        quic_addr,
        stop,
        endpoint,
        tasks,
    })
}

//! Every replica's cached picture of where stations play: the catalogue (from the database), the
//! placement and what each node reports (from the coordinator). Refreshed on every coordinator
//! change (at most every 100 ms) and at least each second, so the redirector answers from
//! memory.

use super::Cluster;
use crate::db::cluster::CatalogStation;
use crate::scheduler::Placement;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct Snapshot {
    /// By slug and by id.
    pub stations: HashMap<String, Arc<CatalogStation>>,
    pub placement: Placement,
    pub nodes: BTreeMap<String, NodeView>,
    /// What each station plays, by station id.
    pub now_playing: BTreeMap<String, onda_shared::cluster::proto::TrackPlaying>,
    /// Audience per station across its edges (relays' pulls from the origin not counted).
    pub listeners: BTreeMap<String, u64>,
    /// True once the first refresh completed.
    pub loaded: bool,
}

#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub name: String,
    pub edge_url: String,
    pub capacity_listeners: u64,
    pub alive: bool,
    pub listeners: u64,
    /// Edge paths with a source (or a relay's upstream) on the air.
    pub on_air: BTreeSet<String>,
    /// Every mount the node last reported (relay pulls are not in its listeners).
    pub mounts: Vec<onda_shared::cluster::proto::MountReport>,
    /// What of its desired state the node's edge refused, and why.
    pub rejected: Vec<onda_shared::cluster::proto::Rejected>,
}

/// An edge serving a mount, for the redirector.
#[derive(Debug, Clone, PartialEq)]
pub struct Carrier {
    pub node: String,
    pub url: String,
    /// Listeners over capacity, for choosing the least loaded.
    pub load: f64,
}

#[derive(Debug, Default)]
pub struct View {
    snap: RwLock<Arc<Snapshot>>,
}

impl View {
    pub fn get(&self) -> Arc<Snapshot> {
        self.snap.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, s: Snapshot) {
        if let Ok(mut slot) = self.snap.write() {
            *slot = Arc::new(s);
        }
    }
}

impl Snapshot {
    pub fn station(&self, key: &str) -> Option<&Arc<CatalogStation>> {
        self.stations.get(key)
    }

    /// The nodes whose edge refused this station or live stream, with the edge's reason.
    pub fn refusals(&self, id: &str) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .flat_map(|(node, n)| {
                n.rejected
                    .iter()
                    .filter(move |r| r.id == id)
                    .map(move |r| (node.clone(), r.reason.clone()))
            })
            .collect()
    }

    /// Live edges with this station's mount on the air, least loaded first.
    pub fn carriers(&self, station: &CatalogStation, mount_path: &str) -> Vec<Carrier> {
        let placed = self.placement.stations.get(&station.id);
        let leaving_only = self.placement.leaving_only.get(&station.id);
        let edge_path = onda_shared::cluster::edge_mount_path(&station.slug, mount_path);
        let mut out: Vec<Carrier> = placed
            .into_iter()
            .flat_map(|p| {
                std::iter::once(&p.origin)
                    .chain(&p.relays)
                    .chain(&p.leaving)
            })
            .chain(leaving_only.into_iter().flatten())
            .filter_map(|id| {
                let n = self.nodes.get(id)?;
                if !n.alive || !n.on_air.contains(&edge_path) {
                    return None;
                }
                Some(Carrier {
                    node: id.clone(),
                    url: format!("{}{edge_path}", n.edge_url.trim_end_matches('/')),
                    load: n.listeners as f64 / n.capacity_listeners.max(1) as f64,
                })
            })
            .collect();
        out.sort_by(|a, b| a.load.total_cmp(&b.load).then_with(|| a.node.cmp(&b.node)));
        out.dedup_by(|a, b| a.node == b.node);
        out
    }
}

impl Snapshot {
    /// A live stream's viewers across its edges, whether its origin has it on the air (a
    /// publisher is sending), and the origin node's name.
    pub fn stream(&self, id: &str, slug: &str) -> (u64, bool, Option<String>) {
        let path = format!("/hls/{slug}");
        let origin = self.placement.stations.get(id).map(|p| p.origin.clone());
        let node = origin.as_ref().and_then(|o| self.nodes.get(o));
        (
            self.listeners.get(id).copied().unwrap_or(0),
            node.is_some_and(|n| n.alive && n.on_air.contains(&path)),
            node.map(|n| n.name.clone()),
        )
    }
}

pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut watch = None;
    loop {
        if watch.is_none() {
            watch = cluster.coord.watch("/").await.ok();
        }
        match refresh(&cluster).await {
            Ok(s) => {
                let old = cluster.view.get();
                let news = old.now_playing != s.now_playing || old.listeners != s.listeners;
                cluster.view.set(s);
                if news {
                    cluster.changed.send_modify(|v| *v += 1);
                }
            }
            Err(e) => tracing::debug!("view refresh: {e:#}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = stop.cancelled() => return,
        }
        let changed = async {
            match watch.as_mut() {
                Some(w) => w.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            still = changed => if !still { watch = None },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn refresh(cluster: &Cluster) -> anyhow::Result<Snapshot> {
    let super::ClusterState {
        catalog,
        nodes,
        placement,
        alive,
        observed,
        now_playing,
    } = super::read_state(cluster).await?;
    let mut listeners: BTreeMap<String, u64> = BTreeMap::new();
    for obs in observed.values() {
        for m in &obs.mounts {
            *listeners.entry(m.station_id.clone()).or_default() += m.listeners;
        }
    }
    let mut stations = HashMap::with_capacity(catalog.len() * 2);
    for s in catalog {
        let s = Arc::new(s);
        stations.insert(s.slug.clone(), s.clone());
        stations.insert(s.id.clone(), s);
    }
    let nodes = nodes
        .into_iter()
        .filter(|n| n.revoked_at.is_none())
        .map(|n| {
            let obs = observed.get(&n.id);
            let view = NodeView {
                name: n.name.clone(),
                edge_url: n.public_url.clone(),
                capacity_listeners: u64::from(n.capacity_listeners),
                alive: alive.contains(&n.id),
                listeners: obs.map_or(0, |o| o.mounts.iter().map(|m| m.listeners).sum()),
                on_air: obs
                    .map(|o| {
                        o.mounts
                            .iter()
                            .filter(|m| m.on_air)
                            .map(|m| m.path.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                mounts: obs.map(|o| o.mounts.clone()).unwrap_or_default(),
                rejected: obs.map(|o| o.rejected.clone()).unwrap_or_default(),
            };
            (n.id, view)
        })
        .collect();
    // Listeners per station for Prometheus; series of stations gone since are dropped.
    // Listeners per station and per tenant for Prometheus; series of stations gone since are
    // dropped. Every tenant with a station has a series (zero when silent), so per-tenant
    // panels show zeros rather than gaps.
    let gauge = &cluster.metrics.station_listeners;
    gauge.reset();
    let mut per_tenant: BTreeMap<&str, u64> = BTreeMap::new();
    for s in stations.values() {
        per_tenant.entry(&s.tenant_id).or_default();
    }
    for (id, n) in &listeners {
        if let Some(s) = stations.get(id) {
            gauge
                .with_label_values(&[&s.slug])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
            *per_tenant.entry(&s.tenant_id).or_default() += n;
        }
    }
    let tenants = &cluster.metrics.tenant_listeners;
    tenants.reset();
    for (t, n) in per_tenant {
        tenants
            .with_label_values(&[t])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    Ok(Snapshot {
        stations,
        placement,
        nodes,
        now_playing,
        listeners,
        loaded: true,
    })
}

//! Leadership and the reconcile loop. Every replica campaigns; the leader alone runs the
//! scheduler and writes `placement` and each node's `desired` state. Leadership lives on a
//! coordinator lease this loop keeps alive; when a keep-alive fails the replica stops acting at
//! once and campaigns again, so two leaders never write at the same time for longer than one
//! lease.

use super::{Cluster, keys};
use crate::db;
use crate::scheduler::{self, NodeInfo, NodeState, Policy, Role, StationDemand};
use onda_shared::cluster::proto::{
    AutoDjSpec, DesiredState, DjSpec, LiveStreamSpec, MountSpec, PlaylistSpec, RenditionSpec,
    StationRole, StationSpec, TrackSpec,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The label the leader gives nodes with an RTMP ingest, which live streams select.
const RTMP_LABEL: &str = "onda.rtmp";

pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Err(e) = lead_once(&cluster, &stop).await {
            tracing::warn!("leadership: {e:#}");
        }
        cluster.leading.store(false, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = stop.cancelled() => {}
        }
    }
}

async fn lead_once(cluster: &Arc<Cluster>, stop: &CancellationToken) -> anyhow::Result<()> {
    let coord = cluster.coord.clone();
    let ttl = cluster.settings.node_ttl;
    let lease = coord.grant(ttl).await?;
    let lost = CancellationToken::new();
    // The lease must outlive the campaign and the leadership: keep it alive from the start.
    let keeper = {
        let coord = coord.clone();
        let lost = lost.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 4);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                match coord.keep_alive(lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("the leadership lease expired");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("cannot keep the leadership lease alive: {e:#}");
                        break;
                    }
                }
            }
            lost.cancel();
        })
    };
    // etcd answers a campaign only when it is won; the client's request timeout ends a long
    // wait with an error, after which we simply campaign again on the same lease.
    let campaign = loop {
        let r = tokio::select! {
            r = coord.campaign(keys::LEADER, &cluster.settings.replica, lease) => r,
            () = lost.cancelled() => break Err(anyhow::anyhow!("lost the lease while campaigning")),
            () = stop.cancelled() => break Ok(()),
        };
        match r {
            Ok(()) => break Ok(()),
            Err(e) if format!("{e:#}").contains("imeout") => continue,
            Err(e) => break Err(e),
        }
    };
    let result = match campaign {
        Ok(()) if !stop.is_cancelled() && !lost.is_cancelled() => {
            cluster.leading.store(true, Ordering::Relaxed);
            tracing::info!("replica {} is the leader", cluster.settings.replica);
            let r = lead(cluster, &lost, stop).await;
            cluster.leading.store(false, Ordering::Relaxed);
            let _ = coord.resign(keys::LEADER).await;
            r
        }
        Ok(()) => Ok(()),
        Err(e) => Err(e),
    };
    keeper.abort();
    let _ = coord.revoke(lease).await;
    result
}

async fn lead(
    cluster: &Arc<Cluster>,
    lost: &CancellationToken,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    // A new leader (a restarted process, or a replica taking over from a dead one) cannot tell a
    // dead node from one still reconnecting: the dead replica's leases expire while agents back
    // off and retry. Moving stations then would cut listeners off healthy nodes, so wait until
    // every node that carries something is alive again, bounded by one node TTL plus the grace.
    let began = tokio::time::Instant::now();
    let deadline = began + cluster.settings.node_ttl + cluster.settings.reconnect_grace;
    let settle = cluster.started.max(began) + cluster.settings.node_ttl;
    let mut said = false;
    loop {
        // A failed read proves nothing about the nodes: only the deadline or a read that
        // finds every carrier back ends the wait.
        let (missing, known) = match missing_carriers(cluster).await {
            Ok(m) => (m, true),
            Err(e) => {
                tracing::warn!("cannot read which nodes are back yet: {e:#}");
                (Default::default(), false)
            }
        };
        let now = tokio::time::Instant::now();
        if now >= deadline || (now >= settle && known && missing.is_empty()) {
            if !missing.is_empty() {
                tracing::warn!(
                    "{} node(s) carrying stations did not reconnect within {:?}: {}",
                    missing.len(),
                    deadline - began,
                    missing.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
            break;
        }
        if !said && !missing.is_empty() && now >= settle {
            tracing::info!(
                "waiting up to {:?} for {} node(s) carrying stations to reconnect",
                deadline - now,
                missing.len()
            );
            said = true;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = lost.cancelled() => return Ok(()),
            () = stop.cancelled() => return Ok(()),
        }
    }
    let mut watch = cluster.coord.watch(keys::NODES).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut round = Round::default();
    let mut first = true;
    let mut pruned: Option<std::time::Instant> = None;
    loop {
        let began = std::time::Instant::now();
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(began);
            prune_carriage(cluster).await;
        }
        let result = reconcile(cluster, &mut round).await;
        let m = &cluster.metrics;
        m.scheduler_duration.observe(began.elapsed().as_secs_f64());
        m.scheduler_runs
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .inc();
        match result {
            Ok((placed, moved)) if first => {
                first = false;
                tracing::info!(
                    "first reconcile as leader: {placed} station(s) placed, {moved} moved"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("reconcile failed: {e:#}"),
        }
        // Coalesce bursts of heartbeats: at most one run per 200 ms.
        let floor = tokio::time::sleep(Duration::from_millis(200));
        tokio::select! {
            () = floor => {}
            () = lost.cancelled() => return Ok(()),
            () = stop.cancelled() => return Ok(()),
        }
        tokio::select! {
            w = watch.recv() => {
                if w.is_none() {
                    watch = cluster.coord.watch(keys::NODES).await?;
                }
            }
            _ = tick.tick() => {}
            () = lost.cancelled() => return Ok(()),
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// How often the leader prunes the `carriage` record.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Forgets carriage no usage report can be checked against any more.
async fn prune_carriage(cluster: &Cluster) {
    let pruned = async {
        let mut c = cluster.db.conn().await?;
        db::carriage::prune(&mut c, db::now_ms()).await
    }
    .await;
    match pruned {
        Ok(0) => {}
        Ok(n) => tracing::info!("pruned {n} carriage row(s) older than usage reports may be late"),
        Err(e) => tracing::warn!("cannot prune the carriage record: {e:#}"),
    }
}

/// Nodes the current placement puts stations on (not revoked) whose liveness key is missing.
async fn missing_carriers(cluster: &Cluster) -> anyhow::Result<BTreeSet<String>> {
    let state = super::read_state(cluster).await?;
    let revoked: BTreeSet<&str> = state
        .nodes
        .iter()
        .filter(|n| n.revoked_at.is_some())
        .map(|n| n.id.as_str())
        .collect();
    Ok(state
        .placement
        .by_node()
        .into_keys()
        .filter(|n| !n.is_empty() && !revoked.contains(n.as_str()) && !state.alive.contains(n))
        .collect())
}

/// What one leadership remembers between rounds, to log and write only changes.
#[derive(Debug, Default)]
pub struct Round {
    last_unplaced: BTreeSet<String>,
    last_alive: Option<BTreeSet<String>>,
    /// The AutoDJ catalogue (library, playlists, DJ accounts) and when it was read: it is read
    /// again at most every [`AUTODJ_REFRESH`], not on every heartbeat-driven round.
    autodj: Option<(tokio::time::Instant, Arc<AutoDjInputs>)>,
    /// Nodes whose carriage this leadership has recorded (see [`write_desired`]).
    carriage_recorded: BTreeSet<String>,
}

/// How stale the AutoDJ catalogue in a round may be: a tenant's playlist change reaches its
/// node within this (plus one round).
const AUTODJ_REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct AutoDjInputs {
    catalog: db::playlists::AutoDjCatalog,
    djs: BTreeMap<String, Vec<DjSpec>>,
}

async fn autodj_inputs(cluster: &Cluster, round: &mut Round) -> anyhow::Result<Arc<AutoDjInputs>> {
    if let Some((at, inputs)) = &round.autodj
        && at.elapsed() < AUTODJ_REFRESH
    {
        return Ok(inputs.clone());
    }
    let mut c = cluster.db.conn().await?;
    let catalog = db::playlists::autodj_catalog(&mut c).await?;
    let mut djs: BTreeMap<String, Vec<DjSpec>> = BTreeMap::new();
    for (station, username, password_hash) in db::streamers::all_credentials(&mut c).await? {
        djs.entry(station).or_default().push(DjSpec {
            username,
            password_hash,
        });
    }
    let inputs = Arc::new(AutoDjInputs { catalog, djs });
    round.autodj = Some((tokio::time::Instant::now(), inputs.clone()));
    Ok(inputs)
}

/// One scheduling round: catalogue and nodes from the database, liveness and observations from
/// the coordinator, placement computed, and every node's desired state rewritten where it
/// changed (with the next generation).
/// Returns how many stations are placed and how many of them moved.
pub async fn reconcile(cluster: &Cluster, round: &mut Round) -> anyhow::Result<(usize, usize)> {
    let super::ClusterState {
        catalog,
        nodes,
        placement: current,
        alive,
        observed,
        ..
    } = super::read_state(cluster).await?;
    let streams = {
        let mut c = cluster.db.conn().await?;
        db::live_streams::catalog(&mut c).await?
    };
    let infos: Vec<NodeInfo> = nodes
        .iter()
        .filter(|n| n.revoked_at.is_none())
        .map(|n| NodeInfo {
            id: n.id.clone(),
            region: n.region.clone(),
            // Live streams go only to nodes with an RTMP ingest: a label they select.
            labels: {
                let mut l = n.labels.clone();
                if !n.rtmp_url.is_empty() {
                    l.insert(RTMP_LABEL.to_string(), "true".to_string());
                }
                l
            },
            capacity_listeners: u64::from(n.capacity_listeners),
            capacity_kbps: u64::from(n.capacity_mbps) * 1000,
            state: if !alive.contains(&n.id) {
                NodeState::Dead
            } else if n.status == onda_shared::api::NodeStatus::Draining {
                NodeState::Draining
            } else {
                NodeState::Ready
            },
        })
        .collect();
    let existing: BTreeMap<String, DesiredState> = cluster.store.all_desired().await?;
    let mut listeners: BTreeMap<&str, u64> = BTreeMap::new();
    // Listeners per (station, node), for the shares of the station's limit.
    let mut per_node: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut serving = BTreeSet::new();
    for (node, obs) in &observed {
        // A node that has not applied its latest desired state may report mounts it is about to
        // drop: its "on the air" cannot end anyone's drain yet.
        let current_gen = existing.get(node).map_or(0, |d| d.generation);
        let up_to_date = obs.applied_generation >= current_gen;
        for m in &obs.mounts {
            *listeners.entry(m.station_id.as_str()).or_default() += m.listeners;
            *per_node
                .entry((m.station_id.as_str(), node.as_str()))
                .or_default() += m.listeners;
            if m.on_air && up_to_date {
                serving.insert((m.station_id.clone(), node.clone()));
            }
        }
    }
    let on_air: Vec<&db::cluster::CatalogStation> = catalog
        .iter()
        .filter(|s| s.active && !s.mounts.is_empty())
        .collect();
    let mut demands: Vec<StationDemand> = on_air
        .iter()
        .map(|s| StationDemand {
            id: s.id.clone(),
            region: s.region.clone(),
            node_selector: s.node_labels.clone(),
            // Nodes leave relay pulls out of their counts: a relay cannot keep itself alive.
            listeners: listeners.get(s.id.as_str()).copied().unwrap_or(0),
            reserve_listeners: cluster.settings.reserve_listeners.min(s.max_listeners),
            kbps_per_listener: s.mounts.iter().map(|m| u64::from(m.2)).sum(),
        })
        .collect();
    // A live stream is placed like a station without listeners yet: one origin, where its
    // publisher connects (viewers are not counted yet, so it gets no relays).
    demands.extend(streams.iter().map(|l| StationDemand {
        id: l.id.clone(),
        region: String::new(),
        node_selector: BTreeMap::from([(RTMP_LABEL.to_string(), "true".to_string())]),
        // Viewers, as the nodes report them: a popular stream gets relays like a station.
        listeners: listeners.get(l.id.as_str()).copied().unwrap_or(0),
        reserve_listeners: cluster.settings.reserve_listeners,
        kbps_per_listener: 0,
    }));
    let policy = Policy {
        relay_threshold_listeners: cluster.settings.relay_threshold_listeners,
        ..Policy::default()
    };
    let outcome = scheduler::place(&scheduler::Input {
        nodes: &infos,
        stations: &demands,
        current: &current,
        serving: &serving,
        policy: &policy,
    });
    let m = &cluster.metrics;
    let stream_by_id: BTreeMap<&str, &db::live_streams::CatalogStream> =
        streams.iter().map(|l| (l.id.as_str(), l)).collect();
    let is_stream = |id: &str| stream_by_id.contains_key(id);
    let placed = outcome
        .placement
        .stations
        .keys()
        .filter(|id| !is_stream(id))
        .count();
    let unplaced = outcome
        .unplaced
        .iter()
        .filter(|u| !is_stream(&u.station))
        .count();
    m.stations
        .with_label_values(&["placed"])
        .set(i64::try_from(placed).unwrap_or(i64::MAX));
    m.stations
        .with_label_values(&["unplaced"])
        .set(i64::try_from(unplaced).unwrap_or(i64::MAX));
    for (status, label) in [
        (onda_shared::api::NodeStatus::Ready, "ready"),
        (onda_shared::api::NodeStatus::Unreachable, "unreachable"),
        (onda_shared::api::NodeStatus::Draining, "draining"),
        (onda_shared::api::NodeStatus::Revoked, "revoked"),
    ] {
        let n = nodes.iter().filter(|n| n.status == status).count();
        m.nodes
            .with_label_values(&[label])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let unplaced: BTreeSet<String> = outcome.unplaced.iter().map(|u| u.station.clone()).collect();
    if unplaced != round.last_unplaced {
        for u in &outcome.unplaced {
            tracing::warn!("station {} is not placed: {}", u.station, u.reason);
        }
        round.last_unplaced = unplaced;
    }
    if outcome.placement != current {
        cluster.store.put_placement(&outcome.placement).await?;
        if outcome.moved > 0 {
            tracing::info!("placement: {} station(s) moved", outcome.moved);
        }
    }

    // What each station's AutoDJ plays, from the media library, playlists and DJ accounts.
    let inputs = autodj_inputs(cluster, round).await?;
    let (autodj_catalog, djs) = (&inputs.catalog, &inputs.djs);

    // Desired state per node.
    let edge_url: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.public_url.as_str()))
        .collect();
    let by_id: BTreeMap<&str, &&db::cluster::CatalogStation> =
        on_air.iter().map(|s| (s.id.as_str(), s)).collect();
    let by_node = outcome.placement.by_node();
    let shares = listener_shares(&outcome.placement, &on_air, &per_node, &existing);
    for n in &nodes {
        if n.revoked_at.is_some() {
            if existing.contains_key(&n.id) {
                cluster.store.delete_desired(&n.id).await?;
                let mut tx = cluster.db.begin().await?;
                db::carriage::sync(&mut tx, &n.id, &BTreeSet::new(), db::now_ms(), true).await?;
                tx.commit().await?;
            }
            continue;
        }
        let mut stations = Vec::new();
        for (station_id, role) in by_node.get(&n.id).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(s) = by_id.get(station_id.as_str()) else {
                continue;
            };
            let placement = outcome.placement.stations.get(station_id);
            let (role, origin_url) = match role {
                Role::Origin => (StationRole::Origin, None),
                Role::Leaving => (StationRole::Leaving, None),
                Role::Relay => (
                    StationRole::Relay,
                    placement
                        .and_then(|p| edge_url.get(p.origin.as_str()))
                        .map(|u| u.to_string()),
                ),
            };
            let autodj = (role != StationRole::Relay)
                .then(|| autodj_spec(s, autodj_catalog, djs.get(&s.id)))
                .flatten();
            stations.push(StationSpec {
                station_id: s.id.clone(),
                slug: s.slug.clone(),
                name: s.name.clone(),
                role,
                origin_url,
                mounts: s
                    .mounts
                    .iter()
                    .map(|(path, format, kbps)| MountSpec {
                        path: path.clone(),
                        format: format.clone(),
                        bitrate_kbps: *kbps,
                        source_password: s.source_password.clone(),
                    })
                    .collect(),
                // This node's share of the station's limit (relay pulls are exempt on the
                // edge, so no room is kept for them).
                max_listeners: Some(
                    shares
                        .get(&(s.id.clone(), n.id.clone()))
                        .copied()
                        .unwrap_or(s.max_listeners),
                ),
                demo_tone: cluster.settings.demo_tone
                    && role != StationRole::Relay
                    && autodj.is_none(),
                autodj,
            });
        }
        let live_streams: Vec<LiveStreamSpec> = by_node
            .get(&n.id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|(_, role)| *role != Role::Leaving)
            .filter_map(|(id, role)| Some((*stream_by_id.get(id.as_str())?, role)))
            .map(|(l, role)| LiveStreamSpec {
                stream_id: l.id.clone(),
                slug: l.slug.clone(),
                stream_key: l.stream_key.clone(),
                playback_secret: l.playback_secret.clone(),
                // Relays pull the stream's HLS from the origin's edge.
                origin_url: (*role == Role::Relay)
                    .then(|| {
                        outcome
                            .placement
                            .stations
                            .get(&l.id)
                            .and_then(|p| edge_url.get(p.origin.as_str()))
                            .map(|u| u.to_string())
                    })
                    .flatten(),
                renditions: if *role == Role::Relay {
                    Vec::new()
                } else {
                    l.renditions
                        .iter()
                        .map(|r| RenditionSpec {
                            name: format!("{}p", r.height),
                            height: r.height,
                            video_kbps: r.video_kbps,
                        })
                        .collect()
                },
            })
            .collect();
        write_desired(
            cluster,
            round,
            &n.id,
            existing.get(&n.id),
            stations,
            live_streams,
        )
        .await?;
        let is_alive = alive.contains(&n.id);
        let changed = round
            .last_alive
            .as_ref()
            .is_none_or(|last| last.contains(&n.id) != is_alive);
        if changed {
            let mut c = cluster.db.conn().await?;
            db::nodes::set_status(&mut c, &n.id, is_alive).await?;
        }
    }
    round.last_alive = Some(alive);
    Ok((outcome.placement.stations.len(), outcome.moved))
}

/// Writes a node's desired state where it changed (with the next generation), after recording in
/// the database what it names (`carriage`, which usage reports are checked against). A
/// leadership's first round records it for every node, changed or not (see
/// [`db::carriage::sync`] for where an unchanged state's new rows start).
async fn write_desired(
    cluster: &Cluster,
    round: &mut Round,
    node_id: &str,
    previous: Option<&DesiredState>,
    stations: Vec<StationSpec>,
    live_streams: Vec<LiveStreamSpec>,
) -> anyhow::Result<()> {
    let changed =
        previous.map(|d| (&d.stations, &d.live_streams)) != Some((&stations, &live_streams));
    if changed || !round.carriage_recorded.contains(node_id) {
        let carried: BTreeSet<String> = stations
            .iter()
            .map(|s| s.station_id.clone())
            .chain(live_streams.iter().map(|l| l.stream_id.clone()))
            .collect();
        let now = db::now_ms();
        let mut tx = cluster.db.begin().await?;
        db::carriage::sync(&mut tx, node_id, &carried, now, changed).await?;
        tx.commit().await?;
        round.carriage_recorded.insert(node_id.to_string());
    }
    if changed {
        let desired = DesiredState {
            generation: previous.map_or(0, |d| d.generation) + 1,
            stations,
            live_streams,
        };
        cluster.store.put_desired(node_id, &desired).await?;
    }
    Ok(())
}

/// Each carrier's share of each station's listener limit (see [`super::shares`]), keyed by
/// (station, node), from the counts the nodes reported (relay pulls are not in them).
fn listener_shares(
    placement: &scheduler::Placement,
    stations: &[&db::cluster::CatalogStation],
    per_node: &BTreeMap<(&str, &str), u64>,
    existing: &BTreeMap<String, DesiredState>,
) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for s in stations {
        let Some(p) = placement.stations.get(&s.id) else {
            continue;
        };
        let carriers: BTreeSet<&String> = std::iter::once(&p.origin)
            .chain(&p.relays)
            .chain(&p.leaving)
            .collect();
        let counts: BTreeMap<String, u64> = carriers
            .iter()
            .map(|node| {
                let n = per_node
                    .get(&(s.id.as_str(), node.as_str()))
                    .copied()
                    .unwrap_or(0);
                ((*node).clone(), n)
            })
            .collect();
        let previous: BTreeMap<String, u64> = carriers
            .iter()
            .filter_map(|node| {
                let spec = existing
                    .get(node.as_str())?
                    .stations
                    .iter()
                    .find(|st| st.station_id == s.id)?;
                Some(((*node).clone(), spec.max_listeners?))
            })
            .collect();
        let split = super::shares::split(s.max_listeners, &counts, &previous);
        if split != previous && !previous.is_empty() {
            tracing::debug!(
                "station {}: listener shares {split:?} (over the limit by at most {} while nodes apply them)",
                s.id,
                super::shares::overshoot_bound(&previous, &split)
            );
        }
        for (node, share) in split {
            out.insert((s.id.clone(), node), share);
        }
    }
    out
}

/// The AutoDJ a station's origin runs: its playlists (or, without any, its whole library in
/// shuffle), always with a rotation so the station never runs out of music, its DJ accounts and
/// its time zone. `None` when the AutoDJ is off or the library is empty.
fn autodj_spec(
    s: &db::cluster::CatalogStation,
    cat: &db::playlists::AutoDjCatalog,
    djs: Option<&Vec<DjSpec>>,
) -> Option<AutoDjSpec> {
    if !s.autodj {
        return None;
    }
    let media = cat.media.get(&s.id).filter(|m| !m.is_empty())?;
    let by_id: BTreeMap<&str, &db::playlists::TrackRow> =
        media.iter().map(|m| (m.media_id.as_str(), m)).collect();
    let track = |m: &db::playlists::TrackRow| TrackSpec {
        sha256: m.sha256.clone(),
        size_bytes: m.size_bytes,
        artist: m.artist.clone(),
        title: m.title.clone(),
        duration_ms: Some(m.duration_ms),
        weight: 1,
    };
    let mut playlists: Vec<PlaylistSpec> = cat
        .playlists
        .get(&s.id)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let tracks: Vec<TrackSpec> = p
                .media_ids
                .iter()
                .filter_map(|id| by_id.get(id.as_str()).map(|m| track(m)))
                .collect();
            (!tracks.is_empty()).then(|| PlaylistSpec {
                name: p.name.clone(),
                kind: wire(&p.kind),
                order: wire(&p.order),
                weight: p.weight,
                days: p.days.clone(),
                start: p.start.clone(),
                end: p.end.clone(),
                every_songs: p.every_songs,
                tracks,
            })
        })
        .collect();
    if !playlists.iter().any(|p| p.kind == "rotation") {
        let mut name = "(all media)".to_string();
        while playlists.iter().any(|p| p.name == name) {
            name.push('+');
        }
        playlists.push(PlaylistSpec {
            name,
            kind: "rotation".to_string(),
            order: "shuffle".to_string(),
            weight: 1,
            days: Vec::new(),
            start: None,
            end: None,
            every_songs: None,
            tracks: media.iter().map(track).collect(),
        });
    }
    let settings = cat
        .settings
        .get(&s.id)
        .cloned()
        .unwrap_or(onda_shared::api::AutoDjSettings {
            timezone: "UTC".to_string(),
            crossfade_ms: 0,
        });
    // A path none of the station's mounts has (the edge refuses a path configured twice).
    let live_mount = onda_shared::paths::live_mount(s.mounts.iter().map(|m| m.0.as_str()));
    Some(AutoDjSpec {
        timezone: settings.timezone,
        crossfade_ms: u64::from(settings.crossfade_ms),
        live_mount: Some(live_mount),
        djs: djs.cloned().unwrap_or_default(),
        playlists,
    })
}

/// The wire name of one of the API's playlist enums (`rotation`, `shuffle`, …), which the edge's
/// configuration uses too.
fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The DJ mount is never one of the station's mounts (the edge would refuse the node's
    /// configuration over a path configured twice).
    #[test]
    fn the_live_mount_is_free_among_the_station_mounts() {
        let station = |mounts: &[&str]| db::cluster::CatalogStation {
            id: "stn_1".to_string(),
            tenant_id: "tnt_1".to_string(),
            slug: "two-lives".to_string(),
            name: "Two Lives".to_string(),
            max_listeners: 10,
            source_password: "pw".to_string(),
            region: String::new(),
            node_labels: BTreeMap::new(),
            mounts: mounts
                .iter()
                .map(|p| (p.to_string(), "mp3".to_string(), 64))
                .collect(),
            active: true,
            autodj: true,
        };
        let mut cat = db::playlists::AutoDjCatalog::default();
        cat.media.insert(
            "stn_1".to_string(),
            vec![db::playlists::TrackRow {
                media_id: "med_1".to_string(),
                sha256: "a".repeat(64),
                size_bytes: 1,
                artist: "A".to_string(),
                title: "T".to_string(),
                duration_ms: 1000,
            }],
        );
        for (mounts, live) in [
            (&["/radio.mp3"][..], "/live"),
            (&["/live", "/radio.mp3"][..], "/live-dj"),
            (&["/live", "/live-dj"][..], "/live-dj-2"),
        ] {
            let spec = autodj_spec(&station(mounts), &cat, None).unwrap();
            assert_eq!(spec.live_mount.as_deref(), Some(live), "{mounts:?}");
        }
    }
}

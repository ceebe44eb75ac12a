//! Leadership and the reconcile loop. Every replica campaigns; the leader alone runs the
//! scheduler and writes `placement` and each node's `desired` state. Leadership lives on a
//! coordinator lease this loop keeps alive; when a keep-alive fails the replica stops acting at
//! once and campaigns again, so two leaders never write at the same time for longer than one
//! lease.
//!
//! A new leader first waits one node lease, and then until every node the placement or the
//! carriage record says carries something is alive again (at most `reconnect_grace` more), so a
//! restart or a failover moves nothing while agents are still reconnecting. (A node whose
//! connection to a live replica goes silent for `cluster.node_silence_ms` loses its lease at
//! once, revoked by that replica in `channel` unless it stalled itself; the lease itself decides
//! only when that replica is gone too.) Then it reconciles after every change
//! under `/nodes/` in the coordinator, at most every 200 ms and at least once a second; it reads
//! the AutoDJ catalogue at most every `AUTODJ_REFRESH` and prunes the carriage record hourly.

use super::round::{
    self, AutoDjInputs, Carriage, Memory, NodeWrites, PlanSettings, RoundPlan, Snapshot,
};
use super::{Cluster, keys};
use crate::db;
use onda_shared::cluster::proto::{DjSpec, TurnSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

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
    let mut rounds: u64 = 0;
    let mut first = true;
    let mut pruned: Option<std::time::Instant> = None;
    loop {
        let began = std::time::Instant::now();
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(began);
            prune_carriage(cluster).await;
        }
        rounds += 1;
        let span = tracing::info_span!("round", round = rounds, moved = tracing::field::Empty);
        let result = reconcile(cluster, &mut round).instrument(span).await;
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
    // The placement says who carries what; the carriage record says it too, and outlives an
    // in-process coordinator's restart, after which nodes only come back once they notice
    // (`cluster.node_silence_ms`).
    let mut carriers: BTreeSet<String> = state.placement.by_node().into_keys().collect();
    let mut c = cluster.db.conn().await?;
    carriers.extend(db::carriage::carrying_nodes(&mut c).await?);
    Ok(carriers
        .into_iter()
        .filter(|n| !n.is_empty() && !revoked.contains(n.as_str()) && !state.alive.contains(n))
        .collect())
}

/// What one leadership carries from one round to the next.
#[derive(Debug, Default)]
pub struct Round {
    memory: Memory,
    /// The AutoDJ catalogue (library, playlists, DJ accounts, requests) and when it was read:
    /// it is read again at most every [`AUTODJ_REFRESH`], not on every heartbeat-driven round.
    autodj: Option<(tokio::time::Instant, Arc<AutoDjInputs>)>,
}

/// How stale the AutoDJ catalogue in a round may be: a tenant's playlist change, or a
/// listener's request, reaches its node within this (plus one round).
const AUTODJ_REFRESH: Duration = Duration::from_secs(2);

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
    let requests = db::requests::pending_all(&mut c).await?;
    let inputs = Arc::new(AutoDjInputs {
        catalog,
        djs,
        requests,
    });
    round.autodj = Some((tokio::time::Instant::now(), inputs.clone()));
    Ok(inputs)
}

/// One scheduling round: what it decides from is read ([`gather`]), the round is decided
/// ([`round::plan`]), and the decisions are written ([`write`]).
/// Returns how many stations are placed and how many of them moved.
pub async fn reconcile(cluster: &Cluster, round: &mut Round) -> anyhow::Result<(usize, usize)> {
    let snapshot = gather(cluster, round).await?;
    let plan = round::plan(&snapshot);
    write(cluster, &mut round.memory, plan).await
}

/// Reads a round's [`Snapshot`]: catalogue and nodes from the database, placement, liveness,
/// observations and desired states from the coordinator, the AutoDJ catalogue (cached).
async fn gather(cluster: &Cluster, round: &mut Round) -> anyhow::Result<Snapshot> {
    let super::ClusterState {
        catalog,
        nodes,
        placement,
        alive,
        observed,
        ..
    } = super::read_state(cluster).await?;
    let streams = {
        let mut c = cluster.db.conn().await?;
        db::live_streams::catalog(&mut c).await?
    };
    let desired = cluster.store.all_desired().await?;
    let autodj = autodj_inputs(cluster, round).await?;
    let settings = &cluster.settings;
    let turn = {
        let mut c = cluster.db.conn().await?;
        crate::turn::secrets::rotate(&mut c, db::now_millis(), &settings.turn).await?
    };
    Ok(Snapshot {
        catalog,
        streams,
        nodes,
        placement,
        alive,
        observed,
        desired,
        autodj,
        turn: (!turn.is_empty()).then(|| TurnSpec {
            realm: settings.turn.realm.clone(),
            secrets: turn,
        }),
        settings: PlanSettings {
            reserve_listeners: settings.reserve_listeners,
            relay_threshold_listeners: settings.relay_threshold_listeners,
            demo_tone: settings.demo_tone,
        },
        memory: round.memory.clone(),
        now_ms: db::now_ms(),
    })
}

/// Sets the gauges, logs and writes what a round decided, remembering in `memory` what was done
/// (a write that fails ends the round; the next one decides again from what is stored).
async fn write(
    cluster: &Cluster,
    memory: &mut Memory,
    plan: RoundPlan,
) -> anyhow::Result<(usize, usize)> {
    let m = &cluster.metrics;
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.stations
        .with_label_values(&["placed"])
        .set(gauge(plan.gauges.stations_placed));
    m.stations
        .with_label_values(&["unplaced"])
        .set(gauge(plan.gauges.stations_unplaced));
    for (label, n) in plan.gauges.nodes {
        m.nodes.with_label_values(&[label]).set(gauge(n));
    }
    if let Some(unplaced) = &plan.unplaced {
        for u in unplaced {
            tracing::warn!("station {} is not placed: {}", u.station, u.reason);
        }
        memory.unplaced = unplaced.iter().map(|u| u.station.clone()).collect();
    }
    if let Some(placement) = &plan.placement {
        cluster.store.put_placement(placement).await?;
        if plan.moved > 0 {
            tracing::Span::current().record("moved", plan.moved);
            tracing::info!("placement: {} station(s) moved", plan.moved);
        }
    }
    for note in &plan.notes {
        tracing::debug!("{note}");
    }
    for node in plan.nodes {
        write_node(cluster, memory, node).await?;
    }
    memory.alive = Some(plan.alive);
    Ok((plan.placed, plan.moved))
}

async fn write_node(
    cluster: &Cluster,
    memory: &mut Memory,
    writes: NodeWrites,
) -> anyhow::Result<()> {
    match writes {
        NodeWrites::Forget { node, carriage } => {
            cluster.store.delete_desired(&node).await?;
            record_carriage(cluster, &node, &carriage).await?;
        }
        NodeWrites::Update {
            node,
            carriage,
            desired,
            alive,
        } => {
            if let Some(carriage) = carriage {
                record_carriage(cluster, &node, &carriage).await?;
                memory.carriage_recorded.insert(node.clone());
            }
            if let Some(desired) = desired {
                cluster.store.put_desired(&node, &desired).await?;
            }
            if let Some(alive) = alive {
                let mut c = cluster.db.conn().await?;
                db::nodes::set_status(&mut c, &node, alive).await?;
            }
        }
    }
    Ok(())
}

async fn record_carriage(cluster: &Cluster, node: &str, c: &Carriage) -> anyhow::Result<()> {
    let mut tx = cluster.db.begin().await?;
    db::carriage::sync(&mut tx, node, &c.carried, c.at_ms, c.new_state).await?;
    tx.commit().await?;
    Ok(())
}

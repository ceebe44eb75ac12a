//! One leader round, decided: [`plan`] takes what the round read from the database and the
//! coordinator ([`Snapshot`]) and says what to write and log ([`RoundPlan`]): the placement, each
//! node's desired state, the carriage record, node statuses and gauges. It does no I/O and reads
//! no clock (the round's time is in the snapshot), so rounds can be replayed and their properties
//! checked on generated clusters, as [`scheduler::place`] is; the leader (`leader.rs`)
//! gathers, plans and writes.
//!
//! Live streams are placed like stations: they select a label the round gives nodes that
//! advertise an RTMP ingest, and their viewers count as listeners, so popular streams get
//! relays. A node stops carrying a station it is leaving only once the new origin has applied
//! its latest desired state and reports the station on the air (an older state's report could
//! be stale).
//!
//! Nodes that advertise TURN URLs also get the cluster's live TURN secrets (read by the leader,
//! see the `turn::secrets` module); a change of the secrets alone is a new generation for them.

use super::Observed;
use crate::db;
use crate::db::cluster::CatalogStation;
use crate::db::live_streams::CatalogStream;
use crate::scheduler::{self, NodeInfo, NodeState, Placement, Policy, Role, StationDemand};
use onda_shared::api::{Node, NodeStatus};
use onda_shared::cluster::proto::{
    AutoDjSpec, DesiredState, DjSpec, LiveStreamSpec, MountSpec, PlaylistSpec, RenditionSpec,
    RequestSpec, StationRole, StationSpec, TrackSpec, TurnSpec,
};
use onda_shared::domain::{PlayOrder, PlaylistKind, TimeZoneName};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The label the leader gives nodes with an RTMP ingest, which live streams select.
const RTMP_LABEL: &str = "onda.rtmp";

/// What each station's AutoDJ plays: the media library, playlists, DJ accounts and listeners'
/// pending requests.
#[derive(Debug, Default)]
pub struct AutoDjInputs {
    pub catalog: db::playlists::AutoDjCatalog,
    /// DJ accounts by station.
    pub djs: BTreeMap<String, Vec<DjSpec>>,
    /// Pending requests by station, oldest first.
    pub requests: BTreeMap<String, Vec<RequestSpec>>,
}

/// The cluster settings a round decides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    pub reserve_listeners: u64,
    pub relay_threshold_listeners: u64,
    pub demo_tone: bool,
}

/// What a leadership remembers from its earlier rounds, so that a round logs and writes only
/// what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The stations and live streams the last round logged as not placed.
    pub unplaced: BTreeSet<String>,
    /// The nodes alive at the last round; `None` before the first, which records every node's
    /// status.
    pub alive: Option<BTreeSet<String>>,
    /// Nodes whose carriage this leadership has recorded: its first round records every node's,
    /// changed or not (see [`db::carriage::sync`] for where an unchanged state's new rows start).
    pub carriage_recorded: BTreeSet<String>,
}

/// Everything one round decides from, read before anything is decided.
#[derive(Debug)]
pub struct Snapshot {
    pub catalog: Vec<CatalogStation>,
    pub streams: Vec<CatalogStream>,
    pub nodes: Vec<Node>,
    /// The placement in force.
    pub placement: Placement,
    pub alive: BTreeSet<String>,
    pub observed: BTreeMap<String, Observed>,
    /// Every node's desired state as last written.
    pub desired: BTreeMap<String, DesiredState>,
    pub autodj: Arc<AutoDjInputs>,
    /// The TURN secrets every node with TURN carries; None when there are none yet.
    pub turn: Option<TurnSpec>,
    pub settings: PlanSettings,
    pub memory: Memory,
    /// The round's time (Unix ms), for the carriage record.
    pub now_ms: u64,
}

/// What a round writes and logs, in the order the leader does it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    pub gauges: Gauges,
    /// Every station and live stream not placed, when they are not the ones the last round
    /// logged (the leader logs them and remembers their ids).
    pub unplaced: Option<Vec<scheduler::Unplaced>>,
    /// The new placement, when it differs from the one in force.
    pub placement: Option<Placement>,
    /// Stations and live streams placed, and how many of them changed origin.
    pub placed: usize,
    pub moved: usize,
    /// Listener shares that changed, as debug lines.
    pub notes: Vec<String>,
    /// Each node's writes, nodes in the snapshot's order; nodes with nothing to write are left
    /// out.
    pub nodes: Vec<NodeWrites>,
    /// The nodes alive at this round (remembered for the next).
    pub alive: BTreeSet<String>,
}

/// Gauge values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    /// Stations placed and not placed (live streams are not counted).
    pub stations_placed: usize,
    pub stations_unplaced: usize,
    /// Nodes by status, with the status's label.
    pub nodes: [(&'static str, usize); 4],
}

/// The carriage record of a node brought in line with what its desired state names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carriage {
    pub carried: BTreeSet<String>,
    /// The desired state is being written now (see [`db::carriage::sync`]).
    pub new_state: bool,
    pub at_ms: u64,
}

/// What a round writes for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeWrites {
    /// A revoked node that still has a desired state: the state is deleted, then its carriage
    /// closed.
    Forget { node: String, carriage: Carriage },
    /// Carriage first (usage reports are checked against it as soon as the node has the
    /// state), then the desired state, then the node's status; each only when needed.
    Update {
        node: String,
        carriage: Option<Carriage>,
        desired: Option<DesiredState>,
        /// Whether the node is alive, when that changed since the last round.
        alive: Option<bool>,
    },
}

impl NodeWrites {
    pub fn node(&self) -> &str {
        match self {
            NodeWrites::Forget { node, .. } | NodeWrites::Update { node, .. } => node,
        }
    }
}

/// Decides a round (see the module's doc).
pub fn plan(s: &Snapshot) -> RoundPlan {
    let on_air: Vec<&CatalogStation> = s
        .catalog
        .iter()
        .filter(|st| st.active && !st.mounts.is_empty())
        .collect();
    let seen = Seen::of(s);
    let outcome = scheduler::place(&scheduler::Input {
        nodes: &node_infos(s),
        stations: &demands(s, &on_air, &seen),
        current: &s.placement,
        serving: &seen.serving,
        policy: &Policy {
            relay_threshold_listeners: s.settings.relay_threshold_listeners,
            ..Policy::default()
        },
    });
    let streams: BTreeMap<&str, &CatalogStream> =
        s.streams.iter().map(|l| (l.id.as_str(), l)).collect();
    let unplaced_ids: BTreeSet<String> =
        outcome.unplaced.iter().map(|u| u.station.clone()).collect();
    let (shares, notes) = listener_shares(&outcome.placement, &on_air, &seen.per_node, &s.desired);
    let specs = Specs {
        placement: &outcome.placement,
        stations: on_air.iter().map(|st| (st.id.as_str(), *st)).collect(),
        streams,
        edge_url: s
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.public_url.as_str()))
            .collect(),
        shares,
        autodj: &s.autodj,
        demo_tone: s.settings.demo_tone,
    };
    let by_node = outcome.placement.by_node();
    let nodes = s
        .nodes
        .iter()
        .filter_map(|n| node_writes(s, &specs, n, by_node.get(&n.id)))
        .collect();
    RoundPlan {
        gauges: gauges(s, &outcome, &specs.streams),
        unplaced: (unplaced_ids != s.memory.unplaced).then(|| outcome.unplaced.clone()),
        placement: (outcome.placement != s.placement).then(|| outcome.placement.clone()),
        placed: outcome.placement.stations.len(),
        moved: outcome.moved,
        notes,
        nodes,
        alive: s.alive.clone(),
    }
}

/// The nodes the scheduler may use: every node not revoked, in the state its liveness and
/// status give it.
fn node_infos(s: &Snapshot) -> Vec<NodeInfo> {
    s.nodes
        .iter()
        .filter(|n| n.revoked_at.is_none())
        .map(|n| {
            let mut labels = n.labels.clone();
            // Live streams go only to nodes with an RTMP ingest: a label they select.
            if !n.rtmp_url.is_empty() {
                labels.insert(RTMP_LABEL.to_string(), "true".to_string());
            }
            NodeInfo {
                id: n.id.clone(),
                region: n.region.clone(),
                labels,
                capacity_listeners: u64::from(n.capacity_listeners),
                capacity_kbps: u64::from(n.capacity_mbps) * 1000,
                state: if !s.alive.contains(&n.id) {
                    NodeState::Dead
                } else if n.status == NodeStatus::Draining {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                },
            }
        })
        .collect()
}

/// What the nodes' observations say: listeners per station and per (station, node), and which
/// (station, node) pairs are on the air.
struct Seen<'a> {
    listeners: BTreeMap<&'a str, u64>,
    per_node: BTreeMap<(&'a str, &'a str), u64>,
    serving: BTreeSet<(String, String)>,
}

impl<'a> Seen<'a> {
    fn of(s: &'a Snapshot) -> Seen<'a> {
        let mut seen = Seen {
            listeners: BTreeMap::new(),
            per_node: BTreeMap::new(),
            serving: BTreeSet::new(),
        };
        for (node, obs) in &s.observed {
            // A node that has not applied its latest desired state may report mounts it is
            // about to drop: its "on the air" cannot end anyone's drain yet.
            let current_gen = s.desired.get(node).map_or(0, |d| d.generation);
            let up_to_date = obs.applied_generation >= current_gen;
            for m in &obs.mounts {
                let station = m.station_id.as_str();
                *seen.listeners.entry(station).or_default() += m.listeners;
                *seen.per_node.entry((station, node.as_str())).or_default() += m.listeners;
                if m.on_air && up_to_date {
                    seen.serving.insert((m.station_id.clone(), node.clone()));
                }
            }
        }
        seen
    }

    fn listeners(&self, id: &str) -> u64 {
        self.listeners.get(id).copied().unwrap_or(0)
    }
}

/// What the scheduler places: the stations on the air, then the live streams.
fn demands(s: &Snapshot, on_air: &[&CatalogStation], seen: &Seen<'_>) -> Vec<StationDemand> {
    let reserve = s.settings.reserve_listeners;
    let stations = on_air.iter().map(|st| StationDemand {
        id: st.id.clone(),
        region: st.region.clone(),
        node_selector: st.node_labels.clone(),
        // Nodes leave relay pulls out of their counts: a relay cannot keep itself alive.
        listeners: seen.listeners(&st.id),
        reserve_listeners: reserve.min(st.max_listeners),
        kbps_per_listener: st.mounts.iter().map(|m| u64::from(m.2)).sum(),
    });
    // A live stream is placed like a station: one origin, where its publisher connects, and
    // relays when its viewers (as the nodes report them) are many.
    let streams = s.streams.iter().map(|l| StationDemand {
        id: l.id.clone(),
        region: String::new(),
        node_selector: BTreeMap::from([(RTMP_LABEL.to_string(), "true".to_string())]),
        listeners: seen.listeners(&l.id),
        reserve_listeners: reserve,
        kbps_per_listener: 0,
    });
    stations.chain(streams).collect()
}

fn gauges(
    s: &Snapshot,
    outcome: &scheduler::Outcome,
    streams: &BTreeMap<&str, &CatalogStream>,
) -> Gauges {
    let is_station = |id: &str| !streams.contains_key(id);
    let nodes_with = |status: NodeStatus| s.nodes.iter().filter(|n| n.status == status).count();
    Gauges {
        stations_placed: outcome
            .placement
            .stations
            .keys()
            .filter(|id| is_station(id))
            .count(),
        stations_unplaced: outcome
            .unplaced
            .iter()
            .filter(|u| is_station(&u.station))
            .count(),
        nodes: [
            ("ready", nodes_with(NodeStatus::Ready)),
            ("unreachable", nodes_with(NodeStatus::Unreachable)),
            ("draining", nodes_with(NodeStatus::Draining)),
            ("revoked", nodes_with(NodeStatus::Revoked)),
        ],
    }
}

/// What every node's specs are built from.
struct Specs<'a> {
    placement: &'a Placement,
    stations: BTreeMap<&'a str, &'a CatalogStation>,
    streams: BTreeMap<&'a str, &'a CatalogStream>,
    /// Every node's public edge URL, which relays pull from.
    edge_url: BTreeMap<&'a str, &'a str>,
    shares: BTreeMap<(String, String), u64>,
    autodj: &'a AutoDjInputs,
    demo_tone: bool,
}

impl Specs<'_> {
    /// The edge URL of the origin of a station or live stream.
    fn origin_url(&self, id: &str) -> Option<String> {
        let p = self.placement.stations.get(id)?;
        self.edge_url.get(p.origin.as_str()).map(|u| u.to_string())
    }

    fn station(&self, node: &str, s: &CatalogStation, role: Role) -> StationSpec {
        let (role, origin_url) = match role {
            Role::Origin => (StationRole::Origin, None),
            Role::Leaving => (StationRole::Leaving, None),
            Role::Relay => (StationRole::Relay, self.origin_url(&s.id)),
        };
        let autodj = (role != StationRole::Relay)
            .then(|| autodj_spec(s, self.autodj))
            .flatten();
        StationSpec {
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
                    format: *format,
                    bitrate_kbps: *kbps,
                    source_password: s.source_password.clone(),
                })
                .collect(),
            // This node's share of the station's limit (relay pulls are exempt on the edge, so
            // no room is kept for them).
            max_listeners: Some(
                self.shares
                    .get(&(s.id.clone(), node.to_string()))
                    .copied()
                    .unwrap_or(s.max_listeners),
            ),
            demo_tone: self.demo_tone && role != StationRole::Relay && autodj.is_none(),
            autodj,
            hls: s.hls,
        }
    }

    fn stream(&self, l: &CatalogStream, role: Role) -> LiveStreamSpec {
        let relay = role == Role::Relay;
        LiveStreamSpec {
            stream_id: l.id.clone(),
            slug: l.slug.clone(),
            stream_key: l.stream_key.clone(),
            playback_secret: l.playback_secret.clone(),
            // Relays pull the stream's HLS from the origin's edge.
            origin_url: relay.then(|| self.origin_url(&l.id)).flatten(),
            renditions: if relay {
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
        }
    }

    /// The specs of what a node carries in `roles` (live streams only as origin or relay).
    fn of_node(
        &self,
        node: &str,
        roles: &[(String, Role)],
    ) -> (Vec<StationSpec>, Vec<LiveStreamSpec>) {
        let stations = roles
            .iter()
            .filter_map(|(id, role)| {
                Some(self.station(node, self.stations.get(id.as_str())?, *role))
            })
            .collect();
        let streams = roles
            .iter()
            .filter(|(_, role)| *role != Role::Leaving)
            .filter_map(|(id, role)| Some(self.stream(self.streams.get(id.as_str())?, *role)))
            .collect();
        (stations, streams)
    }
}

/// A node's writes, or `None` when it has nothing to write.
fn node_writes(
    s: &Snapshot,
    specs: &Specs<'_>,
    n: &Node,
    roles: Option<&Vec<(String, Role)>>,
) -> Option<NodeWrites> {
    let previous = s.desired.get(&n.id);
    if n.revoked_at.is_some() {
        return previous.is_some().then(|| NodeWrites::Forget {
            node: n.id.clone(),
            carriage: Carriage {
                carried: BTreeSet::new(),
                new_state: true,
                at_ms: s.now_ms,
            },
        });
    }
    let (stations, live_streams) = specs.of_node(&n.id, roles.map(Vec::as_slice).unwrap_or(&[]));
    let turn = s.turn.clone().filter(|_| !n.turn_urls.is_empty());
    let changed = previous.map(|d| (&d.stations, &d.live_streams, &d.turn))
        != Some((&stations, &live_streams, &turn));
    let carriage = (changed || !s.memory.carriage_recorded.contains(&n.id)).then(|| Carriage {
        carried: stations
            .iter()
            .map(|st| st.station_id.clone())
            .chain(live_streams.iter().map(|l| l.stream_id.clone()))
            .collect(),
        new_state: changed,
        at_ms: s.now_ms,
    });
    let desired = changed.then(|| DesiredState {
        generation: previous.map_or(0, |d| d.generation) + 1,
        stations,
        live_streams,
        turn,
    });
    let is_alive = s.alive.contains(&n.id);
    let alive = s
        .memory
        .alive
        .as_ref()
        .is_none_or(|last| last.contains(&n.id) != is_alive)
        .then_some(is_alive);
    (carriage.is_some() || desired.is_some() || alive.is_some()).then(|| NodeWrites::Update {
        node: n.id.clone(),
        carriage,
        desired,
        alive,
    })
}

/// Each carrier's share of each station's listener limit (see [`super::shares`]), keyed by
/// (station, node), from the counts the nodes reported (relay pulls are not in them); and a
/// debug line for each station whose shares changed.
fn listener_shares(
    placement: &Placement,
    stations: &[&CatalogStation],
    per_node: &BTreeMap<(&str, &str), u64>,
    existing: &BTreeMap<String, DesiredState>,
) -> (BTreeMap<(String, String), u64>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut notes = Vec::new();
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
            notes.push(format!(
                "station {}: listener shares {split:?} (over the limit by at most {} while nodes apply them)",
                s.id,
                super::shares::overshoot_bound(&previous, &split)
            ));
        }
        for (node, share) in split {
            out.insert((s.id.clone(), node), share);
        }
    }
    (out, notes)
}

/// The AutoDJ a station's origin runs: its playlists (or, without any, its whole library in
/// shuffle), always with a rotation so the station never runs out of music, its DJ accounts and
/// its time zone. `None` when the AutoDJ is off or the library is empty.
fn autodj_spec(s: &CatalogStation, inputs: &AutoDjInputs) -> Option<AutoDjSpec> {
    let cat = &inputs.catalog;
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
                kind: p.kind,
                order: p.order,
                weight: p.weight,
                days: p.days.clone(),
                start: p.start,
                end: p.end,
                every_songs: p.every_songs,
                tracks,
            })
        })
        .collect();
    if !playlists.iter().any(|p| p.kind == PlaylistKind::Rotation) {
        let mut name = "(all media)".to_string();
        while playlists.iter().any(|p| p.name == name) {
            name.push('+');
        }
        playlists.push(PlaylistSpec {
            name,
            kind: PlaylistKind::Rotation,
            order: PlayOrder::Shuffle,
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
            timezone: TimeZoneName::utc(),
            crossfade_ms: 0,
        });
    // A path none of the station's mounts has (the edge refuses a path configured twice).
    let live_mount = onda_shared::paths::live_mount(s.mounts.iter().map(|m| m.0.as_str()));
    Some(AutoDjSpec {
        timezone: settings.timezone,
        crossfade_ms: u64::from(settings.crossfade_ms),
        live_mount: Some(live_mount),
        djs: inputs.djs.get(&s.id).cloned().unwrap_or_default(),
        playlists,
        requests: inputs.requests.get(&s.id).cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use onda_shared::cluster::proto::MountReport;
    use onda_shared::domain::AudioFormat;
    use proptest::prelude::*;

    /// The DJ mount is never one of the station's mounts (the edge would refuse the node's
    /// configuration over a path configured twice).
    #[test]
    fn the_live_mount_is_free_among_the_station_mounts() {
        let station = |mounts: &[&str]| CatalogStation {
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
                .map(|p| (p.to_string(), AudioFormat::Mp3, 64))
                .collect(),
            active: true,
            autodj: true,
            art: None,
            hls_preferred: false,
            hls: true,
        };
        let mut inputs = AutoDjInputs::default();
        inputs
            .catalog
            .media
            .insert("stn_1".to_string(), vec![track_row(1)]);
        for (mounts, live) in [
            (&["/radio.mp3"][..], "/live"),
            (&["/live", "/radio.mp3"][..], "/live-dj"),
            (&["/live", "/live-dj"][..], "/live-dj-2"),
        ] {
            let spec = autodj_spec(&station(mounts), &inputs).unwrap();
            assert_eq!(spec.live_mount.as_deref(), Some(live), "{mounts:?}");
        }
    }

    /// Nodes with TURN get the cluster's secrets, and new secrets are a new generation for
    /// them only; a node without TURN never sees a secret.
    #[test]
    fn turn_secrets_go_to_the_nodes_with_turn() {
        let nodes = vec![
            make_node(0, &(0, true, false, 100, 100, NodeStatus::Ready, true)),
            make_node(1, &(0, false, false, 100, 100, NodeStatus::Ready, true)),
        ];
        let mut s = Snapshot {
            catalog: Vec::new(),
            streams: Vec::new(),
            alive: nodes.iter().map(|n| n.id.clone()).collect(),
            nodes,
            placement: Placement::default(),
            observed: BTreeMap::new(),
            desired: BTreeMap::new(),
            autodj: Arc::new(AutoDjInputs::default()),
            turn: Some(turn_spec(&["s1"])),
            settings: PlanSettings {
                reserve_listeners: 10,
                relay_threshold_listeners: 500,
                demo_tone: false,
            },
            memory: Memory::default(),
            now_ms: 1_750_000_000_000,
        };
        let p = plan(&s);
        s.desired = desired_after(&s, &p);
        s.memory.carriage_recorded = s.desired.keys().cloned().collect();
        s.memory.alive = Some(s.alive.clone());
        assert_eq!(s.desired["node_0"].turn, Some(turn_spec(&["s1"])));
        assert_eq!(s.desired["node_1"].turn, None);
        // Nothing changed: nothing written.
        assert!(plan(&s).nodes.is_empty());
        s.turn = Some(turn_spec(&["s2", "s1"]));
        let p = plan(&s);
        let after = desired_after(&s, &p);
        assert_eq!(p.nodes.len(), 1, "{p:?}");
        assert_eq!(p.nodes[0].node(), "node_0");
        assert_eq!(
            after["node_0"].generation,
            s.desired["node_0"].generation + 1
        );
        assert_eq!(after["node_0"].turn, Some(turn_spec(&["s2", "s1"])));
        assert_eq!(after["node_1"], s.desired["node_1"]);
    }

    fn track_row(i: usize) -> db::playlists::TrackRow {
        db::playlists::TrackRow {
            media_id: format!("med_{i}"),
            sha256: format!("{i:064x}"),
            size_bytes: 1000 + i as u64,
            artist: "A".to_string(),
            title: format!("T{i}"),
            duration_ms: 1000,
        }
    }

    const REGIONS: [&str; 2] = ["eu", "us"];

    /// (region, RTMP ingest, tier label, capacity in listeners, in Mbit/s, status, alive)
    type RawNode = (usize, bool, bool, u32, u32, NodeStatus, bool);

    fn raw_node() -> impl Strategy<Value = RawNode> {
        (
            0..2usize,
            any::<bool>(),
            any::<bool>(),
            0u32..3_000,
            0u32..400,
            prop_oneof![
                6 => Just(NodeStatus::Ready),
                1 => Just(NodeStatus::Unreachable),
                1 => Just(NodeStatus::Draining),
                1 => Just(NodeStatus::Revoked),
            ],
            prop::bool::weighted(0.8),
        )
    }

    fn make_node(i: usize, raw: &RawNode) -> Node {
        let (region, rtmp, tier, capacity_listeners, capacity_mbps, status, _) = *raw;
        Node {
            id: format!("node_{i}"),
            name: format!("edge-{i}"),
            region: REGIONS[region].to_string(),
            labels: if tier {
                BTreeMap::from([("tier".to_string(), "a".to_string())])
            } else {
                BTreeMap::new()
            },
            public_url: format!("http://edge-{i}:8000"),
            rtmp_url: if rtmp {
                format!("rtmp://edge-{i}:1935")
            } else {
                String::new()
            },
            // The nodes with an RTMP ingest also run TURN.
            turn_urls: if rtmp {
                vec![format!("turn:edge-{i}:3478?transport=udp")]
            } else {
                Vec::new()
            },
            capacity_listeners,
            capacity_mbps,
            status,
            last_heartbeat_at: None,
            created_at: "2025-01-01T00:00:00Z".to_string(),
            revoked_at: (status == NodeStatus::Revoked).then(|| "2025-01-02T00:00:00Z".to_string()),
        }
    }

    /// (limit, region: 0 any or an index into REGIONS + 1, tier selector, mount bitrates,
    /// tenant active, AutoDJ, media files)
    type RawStation = (u64, usize, bool, Vec<u32>, bool, bool, usize);

    fn raw_station() -> impl Strategy<Value = RawStation> {
        (
            0u64..300,
            prop_oneof![3 => Just(0usize), 1 => 1..3usize],
            prop::bool::weighted(0.2),
            prop::collection::vec(32u32..320, 0..3),
            prop::bool::weighted(0.9),
            any::<bool>(),
            0usize..3,
        )
    }

    fn make_station(i: usize, raw: &RawStation) -> CatalogStation {
        let (max_listeners, region, tier, ref kbps, active, autodj, _) = *raw;
        CatalogStation {
            id: format!("stn_{i}"),
            tenant_id: "tnt_1".to_string(),
            slug: format!("station-{i}"),
            name: format!("Station {i}"),
            max_listeners,
            source_password: "hackme".to_string(),
            region: region
                .checked_sub(1)
                .map(|r| REGIONS[r].to_string())
                .unwrap_or_default(),
            node_labels: if tier {
                BTreeMap::from([("tier".to_string(), "a".to_string())])
            } else {
                BTreeMap::new()
            },
            mounts: kbps
                .iter()
                .enumerate()
                .map(|(m, k)| (format!("/s{i}-{m}.mp3"), AudioFormat::Mp3, *k))
                .collect(),
            active,
            autodj,
            art: None,
            hls_preferred: false,
            hls: true,
        }
    }

    fn make_stream(i: usize, renditions: &[u32]) -> CatalogStream {
        CatalogStream {
            id: format!("live_{i}"),
            slug: format!("live-{i}"),
            stream_key: format!("key-{i}"),
            playback_secret: (i % 2 == 1).then(|| format!("secret-{i}")),
            renditions: renditions
                .iter()
                .map(|h| onda_shared::api::LiveRendition {
                    height: *h,
                    video_kbps: h * 4,
                })
                .collect(),
        }
    }

    /// Indices into "every node and one that does not exist" or "every station, live stream
    /// and one that does not exist": generated state names anything.
    type Pick = u8;
    /// A placement entry: origin, relays, leaving.
    type RawCarriers = (Pick, Vec<Pick>, Vec<Pick>);
    /// An observation: applied generation and (subject, listeners, on the air) reports.
    type RawObserved = (u64, Vec<(Pick, u64, bool)>);
    /// A stored desired state: generation and (subject, role, listener share) entries.
    type RawDesired = (u64, Vec<(Pick, u8, Option<u64>)>);

    #[derive(Debug, Clone)]
    struct Raw {
        nodes: Vec<RawNode>,
        stations: Vec<RawStation>,
        streams: Vec<Vec<u32>>,
        placement: Vec<Option<RawCarriers>>,
        observed: Vec<Option<RawObserved>>,
        desired: Vec<Option<RawDesired>>,
        memory: (Vec<Pick>, Option<Vec<Pick>>, Vec<Pick>),
        settings: (u64, u64, bool),
    }

    fn raw() -> impl Strategy<Value = Raw> {
        let picks = |n| prop::collection::vec(any::<Pick>(), 0..n);
        (
            prop::collection::vec(raw_node(), 1..7),
            prop::collection::vec(raw_station(), 0..10),
            prop::collection::vec(prop::collection::vec(144u32..1080, 0..3), 0..3),
            prop::collection::vec(prop::option::of((any::<Pick>(), picks(3), picks(3))), 0..12),
            prop::collection::vec(
                prop::option::weighted(
                    0.8,
                    (
                        0u64..4,
                        prop::collection::vec((any::<Pick>(), 0u64..600, any::<bool>()), 0..6),
                    ),
                ),
                0..7,
            ),
            prop::collection::vec(
                prop::option::of((
                    1u64..5,
                    prop::collection::vec(
                        (any::<Pick>(), 0u8..3, prop::option::of(0u64..300)),
                        0..4,
                    ),
                )),
                0..7,
            ),
            (picks(6), prop::option::of(picks(7)), picks(7)),
            (0u64..50, 1u64..400, any::<bool>()),
        )
            .prop_map(
                |(nodes, stations, streams, placement, observed, desired, memory, settings)| Raw {
                    nodes,
                    stations,
                    streams,
                    placement,
                    observed,
                    desired,
                    memory,
                    settings,
                },
            )
    }

    fn pick(ids: &[String], p: Pick) -> &str {
        ids.get(usize::from(p) % (ids.len() + 1))
            .map_or("gone", String::as_str)
    }

    /// Each node's observation, reports naming any station or live stream.
    fn observed_of(
        raw: &Raw,
        node_ids: &[String],
        subjects: &[String],
        catalog: &[CatalogStation],
    ) -> BTreeMap<String, Observed> {
        let mount_of = |id: &str| {
            catalog
                .iter()
                .find(|s| s.id == id)
                .and_then(|s| s.mounts.first())
                .map_or("/hls".to_string(), |m| m.0.clone())
        };
        node_ids
            .iter()
            .zip(&raw.observed)
            .filter_map(|(node, o)| {
                let (applied_generation, reports) = o.as_ref()?;
                let mounts = reports
                    .iter()
                    .map(|(p, listeners, on_air)| {
                        let id = pick(subjects, *p);
                        MountReport {
                            station_id: id.to_string(),
                            path: mount_of(id),
                            listeners: *listeners,
                            on_air: *on_air,
                        }
                    })
                    .collect();
                let obs = Observed {
                    replica: "cp-1".to_string(),
                    mounts,
                    applied_generation: *applied_generation,
                    ..Observed::default()
                };
                Some((node.clone(), obs))
            })
            .collect()
    }

    /// Each node's stored desired state, naming any station in any role.
    fn desired_of(
        raw: &Raw,
        node_ids: &[String],
        catalog: &[CatalogStation],
    ) -> BTreeMap<String, DesiredState> {
        node_ids
            .iter()
            .zip(&raw.desired)
            .filter_map(|(node, d)| {
                let (generation, entries) = d.as_ref()?;
                let stations = entries
                    .iter()
                    .filter_map(|(p, role, share)| {
                        let s = catalog.get(usize::from(*p) % (catalog.len() + 1))?;
                        Some(StationSpec {
                            station_id: s.id.clone(),
                            slug: s.slug.clone(),
                            name: s.name.clone(),
                            role: [
                                StationRole::Origin,
                                StationRole::Relay,
                                StationRole::Leaving,
                            ][usize::from(*role)],
                            origin_url: None,
                            mounts: Vec::new(),
                            max_listeners: *share,
                            demo_tone: false,
                            autodj: None,
                            hls: true,
                        })
                    })
                    .collect();
                let state = DesiredState {
                    generation: *generation,
                    stations,
                    live_streams: Vec::new(),
                    turn: None,
                };
                Some((node.clone(), state))
            })
            .collect()
    }

    /// Each station's library (as many files as its raw entry says) and a DJ account on
    /// `stn_0`.
    fn autodj_of(raw: &Raw, catalog: &[CatalogStation]) -> AutoDjInputs {
        let mut autodj = AutoDjInputs::default();
        for (s, raw) in catalog.iter().zip(&raw.stations) {
            let tracks: Vec<_> = (0..raw.6).map(track_row).collect();
            if !tracks.is_empty() {
                autodj.catalog.media.insert(s.id.clone(), tracks);
            }
        }
        autodj.djs.insert(
            "stn_0".to_string(),
            vec![DjSpec {
                username: "dj".to_string(),
                password_hash: "x".to_string(),
            }],
        );
        autodj
    }

    /// The cluster `raw` describes, its stored state (placement, observations, desired states,
    /// the leadership's memory) naming anything: dead, revoked or unknown nodes, unknown
    /// stations.
    fn snapshot(raw: &Raw) -> Snapshot {
        let nodes: Vec<Node> = raw
            .nodes
            .iter()
            .enumerate()
            .map(|(i, r)| make_node(i, r))
            .collect();
        let catalog: Vec<CatalogStation> = raw
            .stations
            .iter()
            .enumerate()
            .map(|(i, r)| make_station(i, r))
            .collect();
        let streams: Vec<CatalogStream> = raw
            .streams
            .iter()
            .enumerate()
            .map(|(i, r)| make_stream(i, r))
            .collect();
        let node_ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let subjects: Vec<String> = catalog
            .iter()
            .map(|s| s.id.clone())
            .chain(streams.iter().map(|l| l.id.clone()))
            .collect();
        let node_of = |p: Pick| pick(&node_ids, p).to_string();
        let mut placement = Placement::default();
        for (id, entry) in subjects.iter().zip(&raw.placement) {
            if let Some((origin, relays, leaving)) = entry {
                placement.stations.insert(
                    id.clone(),
                    scheduler::StationPlacement {
                        origin: node_of(*origin),
                        relays: relays.iter().map(|p| node_of(*p)).collect(),
                        leaving: leaving.iter().map(|p| node_of(*p)).collect(),
                    },
                );
            }
        }
        let observed = observed_of(raw, &node_ids, &subjects, &catalog);
        let desired = desired_of(raw, &node_ids, &catalog);
        let autodj = autodj_of(raw, &catalog);
        let (unplaced, alive, recorded) = &raw.memory;
        let ids = |list: &[Pick], among: &[String]| {
            list.iter()
                .map(|p| pick(among, *p).to_string())
                .collect::<BTreeSet<String>>()
        };
        Snapshot {
            alive: raw
                .nodes
                .iter()
                .zip(&node_ids)
                .filter(|(r, _)| r.6)
                .map(|(_, id)| id.clone())
                .collect(),
            memory: Memory {
                unplaced: ids(unplaced, &subjects),
                alive: alive.as_ref().map(|a| ids(a, &node_ids)),
                carriage_recorded: ids(recorded, &node_ids),
            },
            settings: PlanSettings {
                reserve_listeners: raw.settings.0,
                relay_threshold_listeners: raw.settings.1,
                demo_tone: raw.settings.2,
            },
            catalog,
            streams,
            nodes,
            placement,
            observed,
            desired,
            autodj: Arc::new(autodj),
            turn: Some(turn_spec(&["s1"])),
            now_ms: 1_750_000_000_000,
        }
    }

    fn turn_spec(secrets: &[&str]) -> TurnSpec {
        TurnSpec {
            realm: "onda".into(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The placement a round leaves in force.
    fn placement_after(s: &Snapshot, p: &RoundPlan) -> Placement {
        p.placement.clone().unwrap_or_else(|| s.placement.clone())
    }

    /// Each node's desired state once a round's writes are done.
    fn desired_after(s: &Snapshot, p: &RoundPlan) -> BTreeMap<String, DesiredState> {
        let mut desired = s.desired.clone();
        for w in &p.nodes {
            match w {
                NodeWrites::Forget { node, .. } => {
                    desired.remove(node);
                }
                NodeWrites::Update {
                    node,
                    desired: Some(d),
                    ..
                } => {
                    desired.insert(node.clone(), d.clone());
                }
                NodeWrites::Update { .. } => {}
            }
        }
        desired
    }

    /// The snapshot of the next round when nothing changed but the round's own writes: every
    /// alive node applied its desired state and reports its origins on the air; the listeners
    /// it reported (`listeners`, by node) are the same.
    fn settle(
        s: &Snapshot,
        p: &RoundPlan,
        listeners: &BTreeMap<String, Vec<MountReport>>,
    ) -> Snapshot {
        let desired = desired_after(s, p);
        let mut memory = s.memory.clone();
        if let Some(unplaced) = &p.unplaced {
            memory.unplaced = unplaced.iter().map(|u| u.station.clone()).collect();
        }
        memory.alive = Some(p.alive.clone());
        for w in &p.nodes {
            if let NodeWrites::Update {
                node,
                carriage: Some(_),
                ..
            } = w
            {
                memory.carriage_recorded.insert(node.clone());
            }
        }
        let mut observed = BTreeMap::new();
        for node in s.alive.iter().chain(s.observed.keys()) {
            let state = desired.get(node);
            let mut mounts = listeners.get(node).cloned().unwrap_or_default();
            for st in state.iter().flat_map(|d| &d.stations) {
                if st.role == StationRole::Origin {
                    mounts.extend(st.mounts.iter().map(|m| MountReport {
                        station_id: st.station_id.clone(),
                        path: m.path.clone(),
                        listeners: 0,
                        on_air: true,
                    }));
                }
            }
            for l in state.iter().flat_map(|d| &d.live_streams) {
                if l.origin_url.is_none() {
                    mounts.push(MountReport {
                        station_id: l.stream_id.clone(),
                        path: "/hls".to_string(),
                        listeners: 0,
                        on_air: true,
                    });
                }
            }
            let obs = Observed {
                replica: "cp-1".to_string(),
                mounts,
                applied_generation: state.map_or(0, |d| d.generation),
                ..Observed::default()
            };
            observed.insert(node.clone(), obs);
        }
        Snapshot {
            catalog: s.catalog.clone(),
            streams: s.streams.clone(),
            nodes: s.nodes.clone(),
            placement: placement_after(s, p),
            alive: s.alive.clone(),
            observed,
            desired,
            autodj: s.autodj.clone(),
            turn: s.turn.clone(),
            settings: s.settings,
            memory,
            now_ms: s.now_ms + 1000,
        }
    }

    fn role_of(r: Role) -> StationRole {
        match r {
            Role::Origin => StationRole::Origin,
            Role::Relay => StationRole::Relay,
            Role::Leaving => StationRole::Leaving,
        }
    }

    fn on_air(s: &Snapshot) -> BTreeSet<&str> {
        s.catalog
            .iter()
            .filter(|st| st.active && !st.mounts.is_empty())
            .map(|st| st.id.as_str())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every node's state after the round is what the placement puts on it, nothing is
        /// written to a node the snapshot does not have, and each write comes with what must
        /// go with it (carriage before a new state, the next generation, a status on change).
        #[test]
        fn every_state_written_follows_the_placement(raw in raw()) {
            let s = snapshot(&raw);
            let p = plan(&s);
            let placement = placement_after(&s, &p);
            let by_node = placement.by_node();
            let after = desired_after(&s, &p);
            let stations = on_air(&s);
            let written: Vec<&str> = p.nodes.iter().map(NodeWrites::node).collect();
            prop_assert_eq!(written.iter().collect::<BTreeSet<_>>().len(), written.len());
            for w in &p.nodes {
                let node = s.nodes.iter().find(|n| n.id == w.node());
                prop_assert!(node.is_some(), "{} is not in the snapshot", w.node());
                let revoked = node.unwrap().revoked_at.is_some();
                match w {
                    NodeWrites::Forget { node, carriage } => {
                        prop_assert!(revoked && s.desired.contains_key(node));
                        prop_assert!(carriage.carried.is_empty() && carriage.new_state);
                    }
                    NodeWrites::Update { node, carriage, desired, alive } => {
                        prop_assert!(!revoked, "{} is revoked", node);
                        if let Some(d) = desired {
                            let previous = s.desired.get(node).map_or(0, |d| d.generation);
                            prop_assert_eq!(d.generation, previous + 1);
                            prop_assert!(carriage.is_some(), "{}: a new state, no carriage", node);
                        }
                        if let Some(c) = carriage {
                            let state = &after[node];
                            let carried: BTreeSet<String> = state.stations.iter()
                                .map(|st| st.station_id.clone())
                                .chain(state.live_streams.iter().map(|l| l.stream_id.clone()))
                                .collect();
                            prop_assert_eq!(&c.carried, &carried);
                            prop_assert_eq!(c.new_state, desired.is_some());
                            prop_assert_eq!(c.at_ms, s.now_ms);
                        } else {
                            prop_assert!(s.memory.carriage_recorded.contains(node));
                        }
                        let is_alive = s.alive.contains(node);
                        let changed = s.memory.alive.as_ref()
                            .is_none_or(|last| last.contains(node) != is_alive);
                        prop_assert_eq!(*alive, changed.then_some(is_alive));
                    }
                }
            }
            for n in &s.nodes {
                if n.revoked_at.is_some() {
                    prop_assert!(!after.contains_key(&n.id), "{} keeps a state", n.id);
                    prop_assert!(!by_node.contains_key(&n.id));
                    continue;
                }
                if !written.contains(&n.id.as_str()) {
                    // Nothing to write: the stored state stands, and so does the status.
                    prop_assert!(s.memory.carriage_recorded.contains(&n.id));
                }
                let state = after.get(&n.id);
                prop_assert!(state.is_some(), "{} has no state", n.id);
                let state = state.unwrap();
                let roles = by_node.get(&n.id).cloned().unwrap_or_default();
                let want: Vec<(String, StationRole)> = roles.iter()
                    .filter(|(id, _)| stations.contains(id.as_str()))
                    .map(|(id, r)| (id.clone(), role_of(*r)))
                    .collect();
                let got: Vec<(String, StationRole)> = state.stations.iter()
                    .map(|st| (st.station_id.clone(), st.role))
                    .collect();
                prop_assert_eq!(got, want, "stations of {}", n.id);
                let want: Vec<(String, bool)> = roles.iter()
                    .filter(|(id, r)| *r != Role::Leaving && s.streams.iter().any(|l| &l.id == id))
                    .map(|(id, r)| (id.clone(), *r == Role::Relay))
                    .collect();
                let got: Vec<(String, bool)> = state.live_streams.iter()
                    .map(|l| (l.stream_id.clone(), l.origin_url.is_some()))
                    .collect();
                prop_assert_eq!(got, want, "live streams of {}", n.id);
                let relays_pull = state.stations.iter()
                    .map(|st| (&st.station_id, st.role == StationRole::Relay, &st.origin_url))
                    .chain(state.live_streams.iter().map(|l| (&l.stream_id, l.origin_url.is_some(), &l.origin_url)));
                for (id, relay, url) in relays_pull {
                    let want = relay.then(|| {
                        let origin = &placement.stations[id].origin;
                        s.nodes.iter().find(|n| &n.id == origin).unwrap().public_url.clone()
                    });
                    prop_assert_eq!(url, &want, "{} on {}", id, n.id);
                }
            }
        }

        /// A node that is not alive, or revoked, carries nothing after the round; a draining
        /// node only keeps what it is leaving; stations and live streams go only where their
        /// region, labels and (for live streams) an RTMP ingest allow.
        #[test]
        fn nothing_goes_where_it_cannot_play(raw in raw()) {
            let s = snapshot(&raw);
            let p = plan(&s);
            let placement = placement_after(&s, &p);
            let after = desired_after(&s, &p);
            for (node, roles) in placement.by_node() {
                let n = s.nodes.iter().find(|n| n.id == node);
                prop_assert!(n.is_some(), "{} is not a node", node);
                let n = n.unwrap();
                prop_assert!(s.alive.contains(&node) && n.revoked_at.is_none(), "{} is gone", node);
                for (id, role) in roles {
                    if n.status == NodeStatus::Draining {
                        prop_assert_eq!(role, Role::Leaving, "{} on draining {}", &id, &node);
                    }
                    if role == Role::Leaving {
                        continue;
                    }
                    if let Some(st) = s.catalog.iter().find(|st| st.id == id) {
                        prop_assert!(st.region.is_empty() || st.region == n.region);
                        prop_assert!(st.node_labels.iter().all(|(k, v)| n.labels.get(k) == Some(v)));
                    } else {
                        prop_assert!(s.streams.iter().any(|l| l.id == id), "{} is unknown", id);
                        prop_assert!(!n.rtmp_url.is_empty(), "{} on {} without RTMP", id, node);
                    }
                }
            }
            for n in &s.nodes {
                if !s.alive.contains(&n.id) {
                    let state = after.get(&n.id);
                    prop_assert!(state.is_none_or(|d| d.stations.is_empty() && d.live_streams.is_empty()));
                }
            }
        }

        /// The gauges count each station on the air once (placed or not) and each node once;
        /// the not-placed stations are logged exactly when they are not the ones last logged.
        #[test]
        fn gauges_and_logs_count_what_the_round_decided(raw in raw()) {
            let s = snapshot(&raw);
            let p = plan(&s);
            let placement = placement_after(&s, &p);
            let stations = on_air(&s);
            let placed = stations.iter().filter(|id| placement.stations.contains_key(**id)).count();
            prop_assert_eq!(p.gauges.stations_placed, placed);
            prop_assert_eq!(p.gauges.stations_placed + p.gauges.stations_unplaced, stations.len());
            prop_assert_eq!(p.gauges.nodes.iter().map(|(_, n)| n).sum::<usize>(), s.nodes.len());
            prop_assert_eq!(p.placed, placement.stations.len());
            let unplaced: BTreeSet<String> = stations.iter().map(|id| id.to_string())
                .chain(s.streams.iter().map(|l| l.id.clone()))
                .filter(|id| !placement.stations.contains_key(id))
                .collect();
            match &p.unplaced {
                Some(list) => {
                    let logged: BTreeSet<String> = list.iter().map(|u| u.station.clone()).collect();
                    prop_assert_eq!(&logged, &unplaced);
                    prop_assert_ne!(&logged, &s.memory.unplaced);
                }
                None => prop_assert_eq!(&unplaced, &s.memory.unplaced),
            }
        }

        /// Each station's carriers share its listener limit: the shares add up to the limit
        /// (or to what the carriers already hold, when that is more), and a single carrier has
        /// the whole limit.
        #[test]
        fn carriers_share_each_station_limit(raw in raw()) {
            let s = snapshot(&raw);
            let p = plan(&s);
            let placement = placement_after(&s, &p);
            let after = desired_after(&s, &p);
            for st in &s.catalog {
                let Some(sp) = placement.stations.get(&st.id) else { continue };
                let carriers: BTreeSet<&String> =
                    std::iter::once(&sp.origin).chain(&sp.relays).chain(&sp.leaving).collect();
                let mut total = 0;
                for node in &carriers {
                    let spec = after[node.as_str()].stations.iter().find(|x| x.station_id == st.id);
                    prop_assert!(spec.is_some(), "{} not on {}", &st.id, node);
                    total += spec.unwrap().max_listeners.unwrap();
                }
                let used: u64 = carriers.iter()
                    .filter_map(|node| s.observed.get(node.as_str()))
                    .flat_map(|o| &o.mounts)
                    .filter(|m| m.station_id == st.id)
                    .map(|m| m.listeners)
                    .sum();
                let want = if carriers.len() == 1 { st.max_listeners } else { st.max_listeners.max(used) };
                prop_assert_eq!(total, want, "{}", &st.id);
            }
        }

        /// A station keeps the nodes it is leaving until its new origin reports it on the air
        /// having applied its latest desired state (an origin still on an older state may
        /// report mounts it is about to drop).
        #[test]
        fn a_handover_keeps_the_old_carriers_until_the_new_origin_is_on_the_air(raw in raw()) {
            let s = snapshot(&raw);
            let p = plan(&s);
            let placement = placement_after(&s, &p);
            let up = |node: &str| s.alive.contains(node)
                && s.nodes.iter().any(|n| n.id == node && n.revoked_at.is_none());
            for (id, sp) in &placement.stations {
                let before = s.placement.stations.get(id);
                let mut previous: BTreeSet<&String> = before.into_iter()
                    .flat_map(|b| std::iter::once(&b.origin).chain(&b.relays).chain(&b.leaving))
                    .chain(s.placement.leaving_only.get(id).into_iter().flatten())
                    .filter(|node| up(node))
                    .collect();
                previous.remove(&sp.origin);
                for r in &sp.relays {
                    previous.remove(r);
                }
                let on_air = s.observed.get(&sp.origin).is_some_and(|o| {
                    o.applied_generation >= s.desired.get(&sp.origin).map_or(0, |d| d.generation)
                        && o.mounts.iter().any(|m| &m.station_id == id && m.on_air)
                });
                let want: Vec<&String> =
                    if on_air { Vec::new() } else { previous.into_iter().collect() };
                prop_assert_eq!(sp.leaving.iter().collect::<Vec<_>>(), want, "{}", id);
            }
        }

        /// Rounds after the first, with nothing changed but what the rounds wrote (the nodes
        /// apply their states and report them), move no station, and they soon write nothing
        /// at all: no placement, no desired state, no carriage, no status, no log.
        #[test]
        fn rounds_without_changes_move_nothing_and_settle(raw in raw()) {
            let mut s = snapshot(&raw);
            let listeners: BTreeMap<String, Vec<MountReport>> = s.observed.iter()
                .map(|(node, o)| {
                    let off_air = o.mounts.iter()
                        .map(|m| MountReport { on_air: false, ..m.clone() })
                        .collect();
                    (node.clone(), off_air)
                })
                .collect();
            let mut p = plan(&s);
            let mut quiet = false;
            for round in 2..=8 {
                let origins: BTreeMap<String, String> = placement_after(&s, &p).stations.iter()
                    .map(|(id, sp)| (id.clone(), sp.origin.clone()))
                    .collect();
                s = settle(&s, &p, &listeners);
                p = plan(&s);
                prop_assert_eq!(p.moved, 0, "round {}", round);
                let next = placement_after(&s, &p);
                for (id, origin) in &origins {
                    prop_assert_eq!(&next.stations[id].origin, origin, "round {}: {}", round, id);
                }
                if p.placement.is_none() && p.nodes.is_empty() && p.unplaced.is_none() {
                    quiet = true;
                    break;
                }
            }
            prop_assert!(quiet, "still writing: {:?}", p);
        }
    }
}

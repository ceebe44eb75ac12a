//! Station placement: decides which edge nodes carry each radio station — one *origin* that runs
//! the station's source (AutoDJ or live input) and, for popular stations, *relays* that pull the
//! station from the origin and serve more listeners — from the nodes' capacities and states, the
//! stations' demand, the placement in force and what the nodes report serving.
//!
//! [`place`] is a pure function: no I/O, no clock, no randomness, no hash-map iteration order.
//! The same [`Input`] gives the same [`Outcome`] whatever the order of its slices, so the
//! coordinator can run it after every change, store the result as intent and reconcile nodes
//! against it, and tests can check its properties on generated clusters.
//!
//! # Rules
//!
//! - **Eligibility.** A node may carry a station when it is `Ready`, its region equals the
//!   station's (an empty station region means any region) and its labels include every
//!   `node_selector` entry with the same value.
//! - **Charges.** `demand = max(listeners, reserve_listeners)`. A station with `c` carriers
//!   (origin + relays) charges each carrier `ceil(demand / c)` listeners and that many times
//!   `kbps_per_listener` kbit/s; the origin also pays `kbps_per_listener` per relay, one copy
//!   pulled by each. A node's charges never exceed its `capacity_listeners` or `capacity_kbps`.
//!   `leaving` entries charge nothing: they are transient (a node hands a station over) and
//!   charging them would make a drain need twice the capacity it frees.
//! - **Stickiness.** A station whose current origin is still eligible and fits keeps it, with
//!   its still-valid relays. Kept stations are charged first (in station id order) at their
//!   current carrier count, so a placement produced by `place` and fed back as `current` keeps
//!   every origin: a node joining moves nothing.
//! - **New and moved stations** (no origin yet, origin `Dead`/`Draining`/gone/no longer eligible,
//!   or no longer fitting) are placed next, largest demand first then by id (first-fit
//!   decreasing, so big stations are not stranded by small ones). Each carrier goes to the
//!   eligible node with room and the lowest utilization after adding it (the larger of its
//!   listener and kbit/s ratios), ties broken by a rendezvous hash of (station, node), then by
//!   node id. Origins are placed before the relays of kept stations grow, because a station off
//!   the air is worse than a carrier serving more than its share.
//! - **Relays** follow listeners (not the reserve) with hysteresis, from the current carrier
//!   count `c`: while `listeners > c × threshold × add_ratio` (and `c - 1 < max_relays`) a
//!   carrier is added; otherwise, while `c > 1` and
//!   `listeners < (c - 1) × threshold × remove_ratio`, the last-added relay is removed. When the
//!   target does not fit, the closest count that fits is used. A `remove_ratio` above
//!   `add_ratio` would flap, so it is lowered to `add_ratio`.
//! - **Handing over without a gap.** A node that carried a station in `current` (origin, relay
//!   or leaving), is not `Dead` and no longer carries it, is listed in the station's `leaving`
//!   until `serving` contains (station, new origin); then it is dropped. `Draining` nodes never
//!   get an origin or relay, so they only ever appear as `leaving`.
//! - **Unplaced stations.** A station that fits nowhere is reported in [`Outcome::unplaced`]
//!   with a sentence saying why, and has no entry in [`Placement::stations`] (whose `origin` is
//!   never empty). If non-`Dead` nodes still carry it, they keep it as `leaving` through
//!   [`Placement::leaving_only`], so its listeners are not cut while no node has room; once the
//!   station is placed again those nodes become ordinary `leaving` entries.
//! - `Dead` nodes, and nodes missing from `Input::nodes`, appear nowhere in the output. Stations
//!   missing from `Input::stations` are dropped everywhere. Ids are expected to be unique; of
//!   duplicates, the smallest by all fields is used (so input order still does not matter).
//! - [`Outcome::moved`] counts the stations that had an origin in `current` and now have another
//!   one, or none (unplaced).
//!
//! Cost: each carrier chosen scans the station's eligible nodes once, so a run is
//! O(stations × nodes × carriers per station) plus sorting; 10,000 stations on 100 nodes take
//! tens of milliseconds in a release build (`cargo run --release -p onda-tests --bin
//! bench-placement`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Ready,
    Draining,
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub capacity_listeners: u64,
    pub capacity_kbps: u64,
    pub state: NodeState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationDemand {
    pub id: String,
    /// Empty = any region.
    pub region: String,
    /// Every label here must be present with the same value on a node that carries the station.
    pub node_selector: BTreeMap<String, String>,
    /// Listeners observed right now across all carriers.
    pub listeners: u64,
    /// Listeners reserved even when nobody listens (so a station fits when its audience arrives).
    pub reserve_listeners: u64,
    /// Outgoing kbit/s per listener (sum of the station's mount bitrates).
    pub kbps_per_listener: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StationPlacement {
    /// The node that runs the station's source (AutoDJ / live input); listeners may connect here.
    pub origin: String,
    /// Nodes that pull the station from the origin edge and serve more listeners.
    pub relays: Vec<String>,
    /// Nodes that still carry the station while its new origin is not serving yet (drain with no gap).
    pub leaving: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub stations: BTreeMap<String, StationPlacement>,
    /// Stations that could not be placed (they are in [`Outcome::unplaced`]) but that non-`Dead`
    /// nodes still carry: station id → those nodes, which keep it as [`Role::Leaving`] so its
    /// listeners are not cut while no node has room. Charged nothing, like `leaving`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leaving_only: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Listeners one carrier (origin or relay) should serve of one station before relays are added.
    pub relay_threshold_listeners: u64,
    /// "approach": add carriers when listeners > carriers * threshold * add_ratio (e.g. 0.8)
    pub relay_add_ratio: f64,
    /// remove a relay when listeners < (carriers - 1) * threshold * remove_ratio (e.g. 0.5) — hysteresis
    pub relay_remove_ratio: f64,
    /// Upper bound on relays per station.
    pub max_relays: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            relay_threshold_listeners: 500,
            relay_add_ratio: 0.8,
            relay_remove_ratio: 0.5,
            max_relays: 8,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub nodes: &'a [NodeInfo],
    pub stations: &'a [StationDemand],
    pub current: &'a Placement,
    /// (station id, node id) pairs observed serving the station (its source is on the air there).
    pub serving: &'a BTreeSet<(String, String)>,
    pub policy: &'a Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub station: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub placement: Placement,
    pub unplaced: Vec<Unplaced>,
    /// Number of stations whose origin changed compared with `current`.
    pub moved: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Origin,
    Relay,
    Leaving,
}

impl Placement {
    /// Every (node id -> list of (station id, role)) the placement puts on a node, including `leaving`.
    pub fn by_node(&self) -> BTreeMap<String, Vec<(String, Role)>> {
        let mut out: BTreeMap<String, Vec<(String, Role)>> = BTreeMap::new();
        let mut put = |node: &str, station: &str, role: Role| {
            if !node.is_empty() {
                out.entry(node.to_owned())
                    .or_default()
                    .push((station.to_owned(), role));
            }
        };
        for (station, p) in &self.stations {
            put(&p.origin, station, Role::Origin);
            for node in &p.relays {
                put(node, station, Role::Relay);
            }
            for node in &p.leaving {
                put(node, station, Role::Leaving);
            }
        }
        for (station, nodes) in &self.leaving_only {
            for node in nodes {
                put(node, station, Role::Leaving);
            }
        }
        // `leaving_only` stations were appended after the others; a stable sort keeps each
        // station's roles in origin, relay, leaving order.
        for list in out.values_mut() {
            list.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }
}

/// Places every station of `input` (see the module documentation for the rules).
pub fn place(input: &Input<'_>) -> Outcome {
    let rules = Rules::new(input.policy);
    let nodes = unique_nodes(input.nodes);
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let (stations, groups) = stations(input, &nodes, &index, &rules);
    let mut sched = Scheduler {
        used: vec![Load::default(); nodes.len()],
        node_hash: nodes.iter().map(|n| fnv1a(n.id.as_bytes())).collect(),
        nodes: &nodes,
    };
    let mut assigned: Vec<Option<Assignment>> = vec![None; stations.len()];
    let p = Phase {
        stations: &stations,
        groups: &groups,
        rules: &rules,
    };
    p.keep(&mut sched, &mut assigned);
    let kept: Vec<bool> = assigned.iter().map(Option::is_some).collect();
    p.place_others(&mut sched, &mut assigned, &kept);
    p.follow_listeners(&mut sched, &mut assigned, &kept);
    outcome(input, &nodes, &index, &p, &assigned)
}

/// Each station to place, with what its current placement gives it, and the lists of eligible
/// nodes its stations share (by index into `groups`).
fn stations<'a>(
    input: &Input<'a>,
    nodes: &[&NodeInfo],
    index: &BTreeMap<&str, usize>,
    rules: &Rules,
) -> (Vec<Station<'a>>, Vec<Vec<usize>>) {
    let demands = unique_stations(input.stations);
    // Stations share few (region, selector) combinations, so each one's eligible nodes are listed
    // once instead of testing labels for every (station, node) pair.
    let mut group_of: BTreeMap<(&str, &BTreeMap<String, String>), usize> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut stations: Vec<Station<'_>> = Vec::with_capacity(demands.len());
    for demand in demands {
        let group = *group_of
            .entry((demand.region.as_str(), &demand.node_selector))
            .or_insert_with(|| {
                groups.push(
                    (0..nodes.len())
                        .filter(|&n| {
                            nodes[n].state == NodeState::Ready && eligible(nodes[n], demand)
                        })
                        .collect(),
                );
                groups.len() - 1
            });
        let usable = |id: &str| {
            index
                .get(id)
                .copied()
                .filter(|&n| nodes[n].state == NodeState::Ready && eligible(nodes[n], demand))
        };
        let current = input.current.stations.get(&demand.id);
        let kept_origin = current.and_then(|p| usable(&p.origin));
        let mut prev_relays: Vec<usize> = Vec::new();
        for relay in current.map(|p| p.relays.as_slice()).unwrap_or_default() {
            if let Some(n) = usable(relay)
                && Some(n) != kept_origin
                && !prev_relays.contains(&n)
                && prev_relays.len() < rules.max_relays
            {
                prev_relays.push(n);
            }
        }
        stations.push(Station {
            demand,
            load: demand.listeners.max(demand.reserve_listeners),
            hash: fnv1a(demand.id.as_bytes()),
            group,
            kept_origin,
            prev_relays,
        });
    }
    (stations, groups)
}

/// What the phases of a placement share: the stations, their eligible nodes, the rules.
struct Phase<'p, 'a> {
    stations: &'p [Station<'a>],
    groups: &'p [Vec<usize>],
    rules: &'p Rules,
}

impl Phase<'_, '_> {
    /// Kept stations at their current carrier count, in id order. Charging exactly what they
    /// had first is what makes a placement fed back unchanged keep every origin. Fewer
    /// carriers are tried next, then more (a grown audience may need relays to fit at all).
    fn keep(&self, sched: &mut Scheduler<'_>, assigned: &mut [Option<Assignment>]) {
        let (stations, groups, rules) = (self.stations, self.groups, self.rules);
        for (i, st) in stations.iter().enumerate() {
            let Some(origin) = st.kept_origin else {
                continue;
            };
            let eligible = &groups[st.group];
            let limit = rules.carrier_limit(eligible.len());
            let carriers = (1 + st.prev_relays.len()).min(limit);
            let target = rules.target_carriers(st.demand.listeners, carriers, limit);
            let tries = (1..=carriers).rev().chain(carriers + 1..=target);
            assigned[i] = sched.first_fit(st, eligible, Some(origin), &st.prev_relays, tries);
        }
    }

    /// New and moved stations, largest demand first (stations are in id order already, so the
    /// index breaks ties by id).
    fn place_others(
        &self,
        sched: &mut Scheduler<'_>,
        assigned: &mut [Option<Assignment>],
        kept: &[bool],
    ) {
        let (stations, groups, rules) = (self.stations, self.groups, self.rules);
        let mut order: Vec<usize> = (0..stations.len()).filter(|&i| !kept[i]).collect();
        order.sort_by(|&a, &b| stations[b].load.cmp(&stations[a].load).then(a.cmp(&b)));
        for i in order {
            let st = &stations[i];
            let eligible = &groups[st.group];
            let limit = rules.carrier_limit(eligible.len());
            let carriers = (1 + st.prev_relays.len()).min(limit);
            let target = rules.target_carriers(st.demand.listeners, carriers, limit);
            assigned[i] = sched.first_fit(st, eligible, None, &st.prev_relays, (1..=target).rev());
        }
    }

    /// Relays of kept stations follow their listeners. Trying counts from the target back
    /// towards the current one ends, at worst, with the configuration just released.
    fn follow_listeners(
        &self,
        sched: &mut Scheduler<'_>,
        assigned: &mut [Option<Assignment>],
        kept: &[bool],
    ) {
        let (stations, groups, rules) = (self.stations, self.groups, self.rules);
        for (i, st) in stations.iter().enumerate() {
            if !kept[i] {
                continue;
            }
            let Some(current) = assigned[i].take() else {
                continue;
            };
            let eligible = &groups[st.group];
            let limit = rules.carrier_limit(eligible.len());
            let carriers = current.carriers();
            let target = rules.target_carriers(st.demand.listeners, carriers, limit);
            if target == carriers {
                assigned[i] = Some(current);
                continue;
            }
            sched.release(st, &current);
            let tries: Vec<usize> = if target > carriers {
                (carriers..=target).rev().collect()
            } else {
                (target..=carriers).collect()
            };
            let next = sched.first_fit(st, eligible, Some(current.origin), &current.relays, tries);
            assigned[i] = match next {
                Some(next) => Some(next),
                None => {
                    sched.commit(st, &current);
                    Some(current)
                }
            };
        }
    }
}

/// The outcome, in station id order: each placed station's carriers and the nodes it is
/// leaving, the stations that could not be placed and why, and how many origins moved.
fn outcome(
    input: &Input<'_>,
    nodes: &[&NodeInfo],
    index: &BTreeMap<&str, usize>,
    p: &Phase<'_, '_>,
    assigned: &[Option<Assignment>],
) -> Outcome {
    let (stations, groups) = (p.stations, p.groups);
    let mut outcome = Outcome::default();
    for (i, st) in stations.iter().enumerate() {
        let id = &st.demand.id;
        let current = input.current.stations.get(id);
        let previous_origin = current.map(|p| p.origin.as_str()).filter(|o| !o.is_empty());
        // Nodes that carried the station and are still alive: candidates for `leaving`.
        let mut previous: BTreeSet<usize> = BTreeSet::new();
        let listed = current
            .into_iter()
            .flat_map(|p| {
                std::iter::once(&p.origin)
                    .chain(&p.relays)
                    .chain(&p.leaving)
            })
            .chain(input.current.leaving_only.get(id).into_iter().flatten());
        for node in listed {
            if let Some(&n) = index.get(node.as_str())
                && nodes[n].state != NodeState::Dead
            {
                previous.insert(n);
            }
        }
        match &assigned[i] {
            Some(a) => {
                let origin = nodes[a.origin].id.clone();
                if previous_origin.is_some_and(|o| o != origin) {
                    outcome.moved += 1;
                }
                previous.remove(&a.origin);
                for r in &a.relays {
                    previous.remove(r);
                }
                let leaving = if previous.is_empty()
                    || input.serving.contains(&(id.clone(), origin.clone()))
                {
                    Vec::new()
                } else {
                    previous.iter().map(|&n| nodes[n].id.clone()).collect()
                };
                let relays = a.relays.iter().map(|&n| nodes[n].id.clone()).collect();
                outcome.placement.stations.insert(
                    id.clone(),
                    StationPlacement {
                        origin,
                        relays,
                        leaving,
                    },
                );
            }
            None => {
                if previous_origin.is_some() {
                    outcome.moved += 1;
                }
                outcome.unplaced.push(Unplaced {
                    station: id.clone(),
                    reason: unplaced_reason(nodes, st, groups[st.group].len()),
                });
                if !previous.is_empty() {
                    outcome.placement.leaving_only.insert(
                        id.clone(),
                        previous.iter().map(|&n| nodes[n].id.clone()).collect(),
                    );
                }
            }
        }
    }
    outcome
}

/// The policy with its ratios made safe to loop on.
struct Rules {
    threshold: f64,
    add_ratio: f64,
    remove_ratio: f64,
    max_relays: usize,
}

impl Rules {
    fn new(policy: &Policy) -> Rules {
        // A remove ratio above the add ratio would remove the relay just added on the next run.
        let remove_ratio = if policy.relay_remove_ratio > policy.relay_add_ratio {
            policy.relay_add_ratio
        } else {
            policy.relay_remove_ratio
        };
        Rules {
            threshold: policy.relay_threshold_listeners as f64,
            add_ratio: policy.relay_add_ratio,
            remove_ratio,
            max_relays: policy.max_relays,
        }
    }

    /// The most carriers a station can have: one origin plus `max_relays`, on distinct nodes.
    fn carrier_limit(&self, eligible_nodes: usize) -> usize {
        self.max_relays.saturating_add(1).min(eligible_nodes).max(1)
    }

    /// Carriers wanted for `listeners`, moving from `current` with hysteresis. Adding and
    /// removing are exclusive, so the loop always ends and a result is its own fixed point.
    fn target_carriers(&self, listeners: u64, current: usize, limit: usize) -> usize {
        let listeners = listeners as f64;
        let mut c = current.clamp(1, limit);
        if listeners > c as f64 * self.threshold * self.add_ratio {
            while c < limit && listeners > c as f64 * self.threshold * self.add_ratio {
                c += 1;
            }
        } else {
            while c > 1 && listeners < (c - 1) as f64 * self.threshold * self.remove_ratio {
                c -= 1;
            }
        }
        c
    }
}

struct Station<'a> {
    demand: &'a StationDemand,
    /// `max(listeners, reserve_listeners)`: what the carriers are charged for.
    load: u64,
    hash: u64,
    group: usize,
    /// The current origin, if it is still Ready and eligible.
    kept_origin: Option<usize>,
    /// Current relays still Ready and eligible, without the origin, in their order (oldest first).
    prev_relays: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Assignment {
    origin: usize,
    relays: Vec<usize>,
}

impl Assignment {
    fn carriers(&self) -> usize {
        1 + self.relays.len()
    }
}

/// Listeners and kbit/s charged to a node. u128 so that no sum of u64 products overflows.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    listeners: u128,
    kbps: u128,
}

impl Load {
    fn plus(self, other: Load) -> Load {
        Load {
            listeners: self.listeners.saturating_add(other.listeners),
            kbps: self.kbps.saturating_add(other.kbps),
        }
    }

    fn minus(self, other: Load) -> Load {
        Load {
            listeners: self.listeners.saturating_sub(other.listeners),
            kbps: self.kbps.saturating_sub(other.kbps),
        }
    }
}

/// (origin charge, relay charge) of a station with `demand` listeners on `carriers` carriers.
fn charges(demand: u64, kbps_per_listener: u64, carriers: usize) -> (Load, Load) {
    let carriers = carriers.max(1) as u128;
    let per_carrier = u128::from(demand).div_ceil(carriers);
    let kbps = per_carrier.saturating_mul(u128::from(kbps_per_listener));
    let relay = Load {
        listeners: per_carrier,
        kbps,
    };
    let pulls = (carriers - 1).saturating_mul(u128::from(kbps_per_listener));
    let origin = Load {
        listeners: per_carrier,
        kbps: kbps.saturating_add(pulls),
    };
    (origin, relay)
}

struct Scheduler<'a> {
    nodes: &'a [&'a NodeInfo],
    node_hash: Vec<u64>,
    used: Vec<Load>,
}

impl Scheduler<'_> {
    fn fits(&self, node: usize, charge: Load) -> bool {
        let after = self.used[node].plus(charge);
        let info = self.nodes[node];
        after.listeners <= u128::from(info.capacity_listeners)
            && after.kbps <= u128::from(info.capacity_kbps)
    }

    fn utilization_after(&self, node: usize, charge: Load) -> f64 {
        fn ratio(used: u128, capacity: u64) -> f64 {
            match (used, capacity) {
                (0, _) => 0.0,
                (_, 0) => f64::INFINITY,
                _ => used as f64 / capacity as f64,
            }
        }
        let after = self.used[node].plus(charge);
        let info = self.nodes[node];
        ratio(after.listeners, info.capacity_listeners).max(ratio(after.kbps, info.capacity_kbps))
    }

    /// The candidate with room for `charge` and the lowest utilization after taking it; ties go
    /// to the lowest rendezvous hash (spreading equal stations over equal nodes), then node id.
    fn best(
        &self,
        station: &Station<'_>,
        candidates: &[usize],
        charge: Load,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut best: Option<(f64, u64, usize)> = None;
        for &n in candidates {
            if skip(n) || !self.fits(n, charge) {
                continue;
            }
            let key = (
                self.utilization_after(n, charge),
                rendezvous(station.hash, self.node_hash[n]),
                n,
            );
            let better = match best {
                None => true,
                Some(b) => match key.0.total_cmp(&b.0) {
                    Ordering::Less => true,
                    Ordering::Equal => (key.1, key.2) < (b.1, b.2),
                    Ordering::Greater => false,
                },
            };
            if better {
                best = Some(key);
            }
        }
        best.map(|b| b.2)
    }

    /// Origin and relays for `carriers` carriers under the current charges, or None if they do
    /// not all fit. `origin` None chooses one. Relays come from `preferred` first (in order, so
    /// shrinking drops the last-added), then from the best other eligible nodes.
    fn assemble(
        &self,
        station: &Station<'_>,
        eligible: &[usize],
        origin: Option<usize>,
        preferred: &[usize],
        carriers: usize,
    ) -> Option<Assignment> {
        let (origin_charge, relay_charge) =
            charges(station.load, station.demand.kbps_per_listener, carriers);
        let origin = match origin {
            Some(n) => self.fits(n, origin_charge).then_some(n)?,
            None => self.best(station, eligible, origin_charge, |_| false)?,
        };
        let wanted = carriers - 1;
        let mut relays: Vec<usize> = Vec::with_capacity(wanted);
        for &n in preferred {
            if relays.len() == wanted {
                break;
            }
            if n != origin && !relays.contains(&n) && self.fits(n, relay_charge) {
                relays.push(n);
            }
        }
        while relays.len() < wanted {
            let n = self.best(station, eligible, relay_charge, |n| {
                n == origin || relays.contains(&n)
            })?;
            relays.push(n);
        }
        Some(Assignment { origin, relays })
    }

    /// Commits the first carrier count in `tries` that fits.
    fn first_fit(
        &mut self,
        station: &Station<'_>,
        eligible: &[usize],
        origin: Option<usize>,
        preferred: &[usize],
        tries: impl IntoIterator<Item = usize>,
    ) -> Option<Assignment> {
        for carriers in tries {
            if let Some(a) = self.assemble(station, eligible, origin, preferred, carriers) {
                self.commit(station, &a);
                return Some(a);
            }
        }
        None
    }

    fn commit(&mut self, station: &Station<'_>, a: &Assignment) {
        let (origin, relay) = charges(station.load, station.demand.kbps_per_listener, a.carriers());
        self.used[a.origin] = self.used[a.origin].plus(origin);
        for &n in &a.relays {
            self.used[n] = self.used[n].plus(relay);
        }
    }

    fn release(&mut self, station: &Station<'_>, a: &Assignment) {
        let (origin, relay) = charges(station.load, station.demand.kbps_per_listener, a.carriers());
        self.used[a.origin] = self.used[a.origin].minus(origin);
        for &n in &a.relays {
            self.used[n] = self.used[n].minus(relay);
        }
    }
}

fn eligible(node: &NodeInfo, station: &StationDemand) -> bool {
    (station.region.is_empty() || node.region == station.region)
        && station
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
}

fn unplaced_reason(nodes: &[&NodeInfo], st: &Station<'_>, eligible_nodes: usize) -> String {
    let demand = st.demand;
    let region = if demand.region.is_empty() {
        String::new()
    } else {
        format!(" in region {:?}", demand.region)
    };
    if eligible_nodes > 0 {
        let (origin, _) = charges(st.load, demand.kbps_per_listener, 1);
        return format!(
            "no capacity: none of the {eligible_nodes} eligible Ready node(s){region} has room \
             for {} listener(s) at {} kbit/s",
            st.load, origin.kbps
        );
    }
    let ready_in_region = nodes.iter().any(|n| {
        n.state == NodeState::Ready && (demand.region.is_empty() || n.region == demand.region)
    });
    if !ready_in_region {
        return format!("no Ready node{region}");
    }
    let labels: Vec<String> = demand
        .node_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("no Ready node{region} has the labels {}", labels.join(", "))
}

/// Nodes sorted by id, one per id (the smallest by all fields when an id repeats), so that the
/// order of `Input::nodes` cannot change the outcome.
fn unique_nodes(nodes: &[NodeInfo]) -> Vec<&NodeInfo> {
    let state_rank = |s: NodeState| match s {
        NodeState::Ready => 0,
        NodeState::Draining => 1,
        NodeState::Dead => 2,
    };
    let mut sorted: Vec<&NodeInfo> = nodes.iter().collect();
    sorted.sort_by(|a, b| {
        (
            &a.id,
            &a.region,
            &a.labels,
            a.capacity_listeners,
            a.capacity_kbps,
        )
            .cmp(&(
                &b.id,
                &b.region,
                &b.labels,
                b.capacity_listeners,
                b.capacity_kbps,
            ))
            .then_with(|| state_rank(a.state).cmp(&state_rank(b.state)))
    });
    sorted.dedup_by(|later, first| later.id == first.id);
    sorted
}

/// Stations sorted by id, one per id (the smallest by all fields when an id repeats).
fn unique_stations(stations: &[StationDemand]) -> Vec<&StationDemand> {
    let mut sorted: Vec<&StationDemand> = stations.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.id, &a.region, &a.node_selector)
            .cmp(&(&b.id, &b.region, &b.node_selector))
            .then_with(|| {
                (a.listeners, a.reserve_listeners, a.kbps_per_listener).cmp(&(
                    b.listeners,
                    b.reserve_listeners,
                    b.kbps_per_listener,
                ))
            })
    });
    sorted.dedup_by(|later, first| later.id == first.id);
    sorted
}

/// FNV-1a, 64 bits: a fixed hash, so tie-breaks do not change between runs or builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Rendezvous (highest-random-weight) score of a (station, node) pair: the splitmix64 finalizer
/// over both ids' hashes, so each station ranks equal nodes in its own order.
fn rendezvous(station: u64, node: u64) -> u64 {
    let mut z = station ^ node.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REGIONS: [&str; 3] = ["eu", "us", "ap"];

    #[derive(Debug, Clone)]
    struct Scenario {
        nodes: Vec<NodeInfo>,
        stations: Vec<StationDemand>,
        policy: Policy,
        current: Placement,
        serving: BTreeSet<(String, String)>,
    }

    impl Scenario {
        fn run(&self) -> Outcome {
            place(&Input {
                nodes: &self.nodes,
                stations: &self.stations,
                current: &self.current,
                serving: &self.serving,
                policy: &self.policy,
            })
        }

        /// The same cluster with `outcome` as the placement in force and every origin on the air.
        fn after(&self, outcome: &Outcome) -> Scenario {
            let mut next = self.clone();
            next.current = outcome.placement.clone();
            next.serving = serving_origins(&outcome.placement);
            next
        }

        fn node(&self, id: &str) -> Option<&NodeInfo> {
            self.nodes.iter().find(|n| n.id == id)
        }
    }

    fn serving_origins(p: &Placement) -> BTreeSet<(String, String)> {
        p.stations
            .iter()
            .map(|(s, sp)| (s.clone(), sp.origin.clone()))
            .collect()
    }

    fn state() -> impl Strategy<Value = NodeState> {
        prop_oneof![
            6 => Just(NodeState::Ready),
            1 => Just(NodeState::Draining),
            1 => Just(NodeState::Dead),
        ]
    }

    fn make_node(i: usize, region: usize, tier: usize, gpu: bool) -> NodeInfo {
        let mut labels = BTreeMap::new();
        labels.insert("tier".to_owned(), ["a", "b", "c"][tier % 3].to_owned());
        if gpu {
            labels.insert("gpu".to_owned(), "yes".to_owned());
        }
        NodeInfo {
            id: format!("n{i:02}"),
            region: REGIONS[region % 3].to_owned(),
            labels,
            capacity_listeners: 0,
            capacity_kbps: 0,
            state: NodeState::Ready,
        }
    }

    fn nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
        prop::collection::vec(
            (
                0..3usize,
                0..3usize,
                any::<bool>(),
                0u64..6_000,
                0u64..800_000,
                state(),
            ),
            1..12,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (region, tier, gpu, cap_l, cap_k, state))| NodeInfo {
                    capacity_listeners: cap_l,
                    capacity_kbps: cap_k,
                    state,
                    ..make_node(i, region, tier, gpu)
                })
                .collect()
        })
    }

    fn stations() -> impl Strategy<Value = Vec<StationDemand>> {
        prop::collection::vec(
            (
                0..5usize,
                0..4usize,
                prop_oneof![3 => 0u64..200, 2 => 0u64..4_000],
                0u64..400,
                0u64..320,
            ),
            0..40,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (region, selector, listeners, reserve, kbps))| {
                    let mut node_selector = BTreeMap::new();
                    match selector {
                        1 => {
                            node_selector.insert("tier".to_owned(), "a".to_owned());
                        }
                        2 => {
                            node_selector.insert("gpu".to_owned(), "yes".to_owned());
                        }
                        _ => {}
                    }
                    StationDemand {
                        id: format!("s{i:03}"),
                        // Regions 3 and 4 mean "any", so most stations can go anywhere.
                        region: REGIONS
                            .get(region)
                            .map(|r| r.to_string())
                            .unwrap_or_default(),
                        node_selector,
                        listeners,
                        reserve_listeners: reserve,
                        kbps_per_listener: kbps,
                    }
                })
                .collect()
        })
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (1u64..1_000, 0.5f64..1.0, 0.1f64..0.9, 0usize..5).prop_map(
            |(threshold, add, remove, max_relays)| Policy {
                relay_threshold_listeners: threshold,
                relay_add_ratio: add,
                relay_remove_ratio: remove,
                max_relays,
            },
        )
    }

    type RawEntry = (u8, Vec<u8>, Vec<u8>);

    /// Any cluster, with an arbitrary (possibly nonsensical) placement in force: origins on dead
    /// or unknown nodes, duplicate relays, random `serving` pairs.
    fn scenario() -> impl Strategy<Value = Scenario> {
        (
            nodes(),
            stations(),
            policy(),
            prop::collection::vec(
                prop::option::of((
                    any::<u8>(),
                    prop::collection::vec(any::<u8>(), 0..4),
                    prop::collection::vec(any::<u8>(), 0..3),
                )),
                0..40,
            ),
            prop::collection::vec((any::<u8>(), any::<u8>()), 0..20),
        )
            .prop_map(|(nodes, stations, policy, current, serving)| {
                // Index `nodes.len()` names a node that does not exist.
                let name = |raw: u8| {
                    let i = usize::from(raw) % (nodes.len() + 1);
                    nodes
                        .get(i)
                        .map(|n| n.id.clone())
                        .unwrap_or_else(|| "ghost".to_owned())
                };
                let mut placement = Placement::default();
                for (st, entry) in stations.iter().zip(current) {
                    let Some((origin, relays, leaving)): Option<RawEntry> = entry else {
                        continue;
                    };
                    placement.stations.insert(
                        st.id.clone(),
                        StationPlacement {
                            origin: name(origin),
                            relays: relays.into_iter().map(name).collect(),
                            leaving: leaving.into_iter().map(name).collect(),
                        },
                    );
                }
                let serving = serving
                    .into_iter()
                    .filter_map(|(s, n)| {
                        let st = stations.get(usize::from(s) % stations.len().max(1))?;
                        Some((st.id.clone(), name(n)))
                    })
                    .collect();
                Scenario {
                    nodes,
                    stations,
                    policy,
                    current: placement,
                    serving,
                }
            })
    }

    /// Charges recomputed from the output alone, per node: (listeners, kbit/s).
    fn charged(s: &Scenario, p: &Placement) -> BTreeMap<String, (u128, u128)> {
        let mut out: BTreeMap<String, (u128, u128)> = BTreeMap::new();
        for (id, sp) in &p.stations {
            let st = s.stations.iter().find(|st| &st.id == id).unwrap();
            let demand = u128::from(st.listeners.max(st.reserve_listeners));
            let k = u128::from(st.kbps_per_listener);
            let carriers = 1 + sp.relays.len() as u128;
            let share = demand.div_ceil(carriers);
            let o = out.entry(sp.origin.clone()).or_default();
            o.0 += share;
            o.1 += share * k + (carriers - 1) * k;
            for r in &sp.relays {
                let e = out.entry(r.clone()).or_default();
                e.0 += share;
                e.1 += share * k;
            }
        }
        out
    }

    fn is_eligible(node: &NodeInfo, st: &StationDemand) -> bool {
        (st.region.is_empty() || st.region == node.region)
            && st
                .node_selector
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v))
    }

    fn carriers_of<'p>(p: &'p Placement, station: &str) -> Vec<&'p str> {
        p.stations
            .get(station)
            .map(|sp| {
                std::iter::once(sp.origin.as_str())
                    .chain(sp.relays.iter().map(String::as_str))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deterministic Fisher–Yates from a seed (splitmix64), to permute inputs.
    fn shuffle<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let j = (rendezvous(seed, 0) % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn never_exceeds_node_capacity(s in scenario()) {
            let out = s.run();
            for (node, (listeners, kbps)) in charged(&s, &out.placement) {
                let info = s.node(&node).unwrap();
                prop_assert!(listeners <= u128::from(info.capacity_listeners),
                    "{node}: {listeners} listeners > {}", info.capacity_listeners);
                prop_assert!(kbps <= u128::from(info.capacity_kbps),
                    "{node}: {kbps} kbit/s > {}", info.capacity_kbps);
            }
        }

        #[test]
        fn respects_region_labels_and_node_states(s in scenario()) {
            let out = s.run();
            let unplaced: BTreeSet<&str> =
                out.unplaced.iter().map(|u| u.station.as_str()).collect();
            for st in &s.stations {
                // Every station is either placed or unplaced, never both.
                prop_assert_ne!(out.placement.stations.contains_key(&st.id),
                    unplaced.contains(st.id.as_str()));
            }
            for (id, sp) in &out.placement.stations {
                let st = s.stations.iter().find(|st| &st.id == id).unwrap();
                let carriers = carriers_of(&out.placement, id);
                let distinct: BTreeSet<&str> = carriers.iter().copied().collect();
                prop_assert_eq!(distinct.len(), carriers.len(), "{} carriers repeat", id);
                prop_assert!(sp.relays.len() <= s.policy.max_relays);
                for node in carriers {
                    let info = s.node(node).unwrap();
                    prop_assert_eq!(info.state, NodeState::Ready);
                    prop_assert!(is_eligible(info, st), "{} on ineligible {}", id, node);
                }
                for node in &sp.leaving {
                    prop_assert!(!distinct.contains(node.as_str()));
                }
            }
            for id in out.placement.leaving_only.keys() {
                prop_assert!(unplaced.contains(id.as_str()));
            }
            for (node, list) in out.placement.by_node() {
                let info = s.node(&node).unwrap();
                prop_assert_ne!(info.state, NodeState::Dead);
                if info.state == NodeState::Draining {
                    prop_assert!(list.iter().all(|(_, role)| *role == Role::Leaving));
                }
            }
        }

        #[test]
        fn is_deterministic_and_ignores_input_order(s in scenario(), seed in any::<u64>()) {
            let first = s.run();
            prop_assert_eq!(&first, &s.run());
            let mut shuffled = s.clone();
            shuffle(&mut shuffled.nodes, seed);
            shuffle(&mut shuffled.stations, seed.rotate_left(17));
            prop_assert_eq!(&first, &shuffled.run());
        }

        #[test]
        fn node_joining_moves_no_origin(
            s in scenario(),
            region in 0..3usize,
            tier in 0..3usize,
            gpu in any::<bool>(),
            capacity in 0u64..10_000,
        ) {
            // A stable placement: the output of a run fed back as the placement in force.
            let stable = s.after(&s.run());
            let before = stable.run();
            let mut joined = stable.after(&before);
            joined.nodes.push(NodeInfo {
                id: "n-joined".to_owned(),
                capacity_listeners: capacity,
                capacity_kbps: capacity * 300,
                ..make_node(99, region, tier, gpu)
            });
            let after = joined.run();
            prop_assert_eq!(after.moved, 0);
            for (id, sp) in &before.placement.stations {
                prop_assert_eq!(&after.placement.stations[id].origin, &sp.origin);
            }
            // Even the first output, fed back directly, is already stable for its origins.
            let mut direct = s.after(&s.run());
            direct.nodes = joined.nodes.clone();
            prop_assert_eq!(direct.run().moved, 0);
        }

        #[test]
        fn dead_node_stations_are_replaced(s in scenario(), pick in any::<usize>()) {
            let mut s = s;
            for n in &mut s.nodes {
                n.capacity_listeners = 1 << 40;
                n.capacity_kbps = 1 << 50;
            }
            s.current = Placement::default();
            let first = s.run();
            let mut dead = s.after(&first);
            let victim = dead.nodes[pick % dead.nodes.len()].id.clone();
            dead.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Dead;
            let out = dead.run();
            prop_assert!(!out.placement.by_node().contains_key(&victim));
            for st in &s.stations {
                let was_there = carriers_of(&first.placement, &st.id).contains(&victim.as_str());
                let can_go = dead.nodes.iter()
                    .any(|n| n.state == NodeState::Ready && is_eligible(n, st));
                if was_there {
                    prop_assert!(can_go || !out.placement.stations.contains_key(&st.id));
                }
                if can_go {
                    // Ample capacity: every station with an eligible Ready node is placed on one.
                    let sp = out.placement.stations.get(&st.id);
                    prop_assert!(sp.is_some(), "{} unplaced: {:?}", st.id, out.unplaced);
                    let origin = s.node(&sp.unwrap().origin).unwrap();
                    prop_assert_eq!(origin.state, NodeState::Ready);
                }
            }
        }

        #[test]
        fn draining_node_hands_over_without_gap(s in scenario(), pick in any::<usize>()) {
            let mut s = s;
            s.current = Placement::default();
            let mut step = s.after(&s.run());
            let before = step.current.clone();
            let drained = step.nodes[pick % step.nodes.len()].id.clone();
            step.nodes.iter_mut().find(|n| n.id == drained).unwrap().state = NodeState::Draining;
            let carried: Vec<String> = s.stations.iter()
                .map(|st| st.id.clone())
                .filter(|id| carriers_of(&before, id).contains(&drained.as_str()))
                .collect();
            let mut previous: Option<Placement> = None;
            for _round in 0..3 {
                let out = step.run();
                let p = &out.placement;
                for (node, list) in p.by_node() {
                    if node == drained {
                        prop_assert!(list.iter().all(|(_, role)| *role == Role::Leaving));
                    }
                }
                for id in &carried {
                    match p.stations.get(id) {
                        Some(sp) => {
                            let on_air = step.serving.contains(&(id.clone(), sp.origin.clone()));
                            let had_it = step.current.by_node().get(&drained)
                                .is_some_and(|list| list.iter().any(|(s, _)| s == id));
                            // Kept until the new origin serves, dropped once it does.
                            prop_assert_eq!(sp.leaving.contains(&drained), had_it && !on_air);
                            // No gap: the origin serves, or some node still carries the station.
                            prop_assert!(on_air || !sp.leaving.is_empty(), "{} has a gap", id);
                        }
                        None => {
                            // Nowhere to go: the draining node keeps serving it.
                            let kept = p.leaving_only.get(id).unwrap();
                            prop_assert!(kept.contains(&drained));
                        }
                    }
                }
                // A station placed in the previous round whose origin is now on the air no
                // longer has the draining node.
                if let Some(prev) = &previous {
                    for (id, sp) in &p.stations {
                        if prev.stations.get(id).is_some_and(|q| q.origin == sp.origin) {
                            prop_assert!(!sp.leaving.contains(&drained));
                        }
                    }
                }
                previous = Some(p.clone());
                step = step.after(&out);
            }
        }
    }

    /// `count` Ready nodes in one region with room for anything.
    fn roomy_nodes(count: usize) -> Vec<NodeInfo> {
        (0..count)
            .map(|i| NodeInfo {
                capacity_listeners: 1 << 30,
                capacity_kbps: 1 << 40,
                ..make_node(i, 0, 0, false)
            })
            .collect()
    }

    fn one_station(listeners: u64) -> Vec<StationDemand> {
        vec![StationDemand {
            id: "radio".to_owned(),
            region: String::new(),
            node_selector: BTreeMap::new(),
            listeners,
            reserve_listeners: 10,
            kbps_per_listener: 128,
        }]
    }

    /// Runs the single station through `audience`, each run fed the previous output, and
    /// returns (origin, relays) after each run.
    fn follow(nodes: &[NodeInfo], policy: &Policy, audience: &[u64]) -> Vec<(String, Vec<String>)> {
        let mut current = Placement::default();
        let mut seen = Vec::new();
        for &listeners in audience {
            let stations = one_station(listeners);
            let serving = serving_origins(&current);
            let out = place(&Input {
                nodes,
                stations: &stations,
                current: &current,
                serving: &serving,
                policy,
            });
            let sp = &out.placement.stations["radio"];
            seen.push((sp.origin.clone(), sp.relays.clone()));
            current = out.placement;
        }
        seen
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn relays_follow_listeners(
            node_count in 1usize..8,
            threshold in 10u64..1_000,
            max_relays in 0usize..9,
        ) {
            let nodes = roomy_nodes(node_count);
            let policy = Policy { relay_threshold_listeners: threshold, max_relays, ..Policy::default() };
            let t = threshold;
            let seen = follow(&nodes, &policy, &[0, 3 * t, 2 * t, t, t / 2, 0]);
            prop_assert!(seen[0].1.is_empty());
            // 3×threshold at an add ratio of 0.8: 4 carriers (3×t > 3.2×t is false).
            let expected = 3.min(node_count - 1).min(max_relays);
            prop_assert_eq!(seen[1].1.len(), expected);
            for (origin, relays) in &seen {
                prop_assert_eq!(origin, &seen[0].0);
                prop_assert!(!relays.contains(origin));
                prop_assert_eq!(relays.iter().collect::<BTreeSet<_>>().len(), relays.len());
            }
            for pair in seen[1..].windows(2) {
                prop_assert!(pair[1].1.len() <= pair[0].1.len());
                // Shrinking drops the last-added relays and keeps the others.
                prop_assert!(pair[0].1.starts_with(&pair[1].1));
            }
            prop_assert!(seen.last().unwrap().1.is_empty());
        }

        #[test]
        fn relays_do_not_flap_around_a_boundary(
            threshold in 50u64..1_000,
            wobble in prop::collection::vec(0u64..1_000, 2..12),
            around_removal in any::<bool>(),
        ) {
            let nodes = roomy_nodes(4);
            let policy = Policy { relay_threshold_listeners: threshold, ..Policy::default() };
            // Boundaries at 2 carriers: add above 1.6 t, remove below 0.5 t. Oscillating by up to
            // a fifth of the threshold around 0.8 t (where the relay was added) or around 0.5 t
            // (where it is removed) crosses at most one of them, once.
            let centre = if around_removal { threshold / 2 } else { threshold * 4 / 5 };
            let swing = threshold / 5;
            let mut audience = vec![threshold];
            audience.extend(wobble.iter().enumerate().map(|(i, w)| {
                let delta = w % (swing + 1);
                if i % 2 == 0 { centre + delta } else { centre - delta }
            }));
            let seen = follow(&nodes, &policy, &audience);
            prop_assert_eq!(seen[0].1.len(), 1);
            let changes = seen.windows(2).filter(|w| w[0].1 != w[1].1).count();
            prop_assert!(changes <= 1, "relays flapped: {:?} for {:?}", seen, audience);
            if !around_removal {
                prop_assert!(seen.iter().all(|(_, r)| r == &seen[0].1));
            }
        }
    }

    #[test]
    fn unplaced_reasons_name_the_cause() {
        let mut nodes = roomy_nodes(2);
        nodes[1].state = NodeState::Draining;
        let mut stations = one_station(10);
        stations[0].region = "us".to_owned();
        let mut labelled = one_station(10);
        labelled[0].id = "labelled".to_owned();
        labelled[0]
            .node_selector
            .insert("gpu".to_owned(), "yes".to_owned());
        let mut huge = one_station(1 << 40);
        huge[0].id = "huge".to_owned();
        stations.extend(labelled);
        stations.extend(huge);
        let out = place(&Input {
            nodes: &nodes,
            stations: &stations,
            current: &Placement::default(),
            serving: &BTreeSet::new(),
            policy: &Policy {
                max_relays: 0,
                ..Policy::default()
            },
        });
        let reasons: BTreeMap<&str, &str> = out
            .unplaced
            .iter()
            .map(|u| (u.station.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(reasons["radio"], "no Ready node in region \"us\"");
        assert_eq!(reasons["labelled"], "no Ready node has the labels gpu=yes");
        assert!(
            reasons["huge"].starts_with("no capacity"),
            "{}",
            reasons["huge"]
        );
        assert!(out.placement.stations.is_empty());
    }

    #[test]
    fn unplaced_station_stays_on_its_draining_node() {
        let mut nodes = roomy_nodes(1);
        let stations = one_station(10);
        let mut current = Placement::default();
        current.stations.insert(
            "radio".to_owned(),
            StationPlacement {
                origin: nodes[0].id.clone(),
                ..StationPlacement::default()
            },
        );
        nodes[0].state = NodeState::Draining;
        let out = place(&Input {
            nodes: &nodes,
            stations: &stations,
            current: &current,
            serving: &serving_origins(&current),
            policy: &Policy::default(),
        });
        assert_eq!(out.moved, 1);
        assert_eq!(out.unplaced.len(), 1);
        assert!(out.placement.stations.is_empty());
        assert_eq!(
            out.placement.leaving_only["radio"],
            vec![nodes[0].id.clone()]
        );
        assert_eq!(
            out.placement.by_node()[&nodes[0].id],
            vec![("radio".to_owned(), Role::Leaving)]
        );
    }
}

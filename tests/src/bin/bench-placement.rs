//! Benchmark (not a test): the scheduler's `place` on 10,000 stations and 100 nodes in 3 regions.
//! Times four cases, each the median of 5 runs: the first placement (nothing in force), the same
//! input with that result in force (steady state), one node dead, and one node added. Prints the
//! stations each case moved and left unplaced, and exits non-zero if the first placement takes
//! a second or more.
//!
//! Run with `cargo run --release -p onda-tests --bin bench-placement`.

use onda_control_plane::scheduler::{
    Input, NodeInfo, NodeState, Outcome, Placement, Policy, StationDemand, place,
};
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const STATIONS: usize = 10_000;
const NODES: usize = 100;
const RUNS: usize = 5;
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

/// splitmix64: a fixed sequence, so every run of the benchmark places the same cluster.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn node(i: usize, seq: &mut Sequence) -> NodeInfo {
    let mut labels = BTreeMap::new();
    labels.insert(
        "tier".to_owned(),
        if i.is_multiple_of(4) {
            "premium"
        } else {
            "standard"
        }
        .to_owned(),
    );
    // Nodes from 20,000 to 40,000 listeners with 3 to 7 Gbit/s of uplink: the stations below
    // fill the cluster to about half, as a hosting company would run it.
    NodeInfo {
        id: format!("node-{i:03}"),
        region: REGIONS[i % REGIONS.len()].to_owned(),
        labels,
        capacity_listeners: 20_000 + seq.below(20_001),
        capacity_kbps: 3_000_000 + seq.below(4_000_001),
        state: NodeState::Ready,
    }
}

fn station(i: usize, seq: &mut Sequence) -> StationDemand {
    // A long tail: most stations have a handful of listeners, a few have thousands.
    let listeners = match seq.below(100) {
        0..=69 => seq.below(20),
        70..=94 => seq.below(200),
        95..=98 => seq.below(2_000),
        _ => 2_000 + seq.below(6_000),
    };
    let region = match seq.below(10) {
        0..=5 => String::new(),
        r => REGIONS[(r % 3) as usize].to_owned(),
    };
    let mut node_selector = BTreeMap::new();
    if seq.below(20) == 0 {
        node_selector.insert("tier".to_owned(), "premium".to_owned());
    }
    StationDemand {
        id: format!("station-{i:05}"),
        region,
        node_selector,
        listeners,
        reserve_listeners: [5, 10, 25, 50][seq.below(4) as usize],
        // The sum of one to three mounts' bitrates.
        kbps_per_listener: [64, 128, 128, 160, 192, 256, 320][seq.below(7) as usize],
    }
}

struct Case {
    name: &'static str,
    median: Duration,
    min: Duration,
    max: Duration,
    outcome: Outcome,
}

fn measure(
    name: &'static str,
    nodes: &[NodeInfo],
    stations: &[StationDemand],
    current: &Placement,
    policy: &Policy,
) -> Case {
    let serving: BTreeSet<(String, String)> = current
        .stations
        .iter()
        .map(|(s, p)| (s.clone(), p.origin.clone()))
        .collect();
    let input = Input {
        nodes,
        stations,
        current,
        serving: &serving,
        policy,
    };
    let mut times = Vec::with_capacity(RUNS);
    let mut outcome = Outcome::default();
    for _ in 0..RUNS {
        let start = Instant::now();
        outcome = place(&input);
        times.push(start.elapsed());
    }
    times.sort();
    Case {
        name,
        median: times[RUNS / 2],
        min: times[0],
        max: times[RUNS - 1],
        outcome,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() -> ExitCode {
    let mut seq = Sequence(0x6f6e_6461);
    let mut nodes: Vec<NodeInfo> = (0..NODES).map(|i| node(i, &mut seq)).collect();
    let stations: Vec<StationDemand> = (0..STATIONS).map(|i| station(i, &mut seq)).collect();
    let policy = Policy::default();

    let mut cases = Vec::new();
    let initial = measure("initial", &nodes, &stations, &Placement::default(), &policy);
    let first = initial.outcome.placement.clone();
    cases.push(initial);

    let steady = measure("steady", &nodes, &stations, &first, &policy);
    let stable = steady.outcome.placement.clone();
    cases.push(steady);

    // The node carrying the most stations dies.
    let busiest = stable
        .by_node()
        .into_iter()
        .max_by_key(|(id, list)| (list.len(), std::cmp::Reverse(id.clone())))
        .map(|(id, _)| id)
        .unwrap_or_default();
    let mut one_dead = nodes.clone();
    for n in &mut one_dead {
        if n.id == busiest {
            n.state = NodeState::Dead;
        }
    }
    cases.push(measure(
        "1 node dead",
        &one_dead,
        &stations,
        &stable,
        &policy,
    ));

    let mut spare = node(NODES, &mut seq);
    spare.id = "node-new".to_owned();
    nodes.push(spare);
    cases.push(measure("1 node added", &nodes, &stations, &stable, &policy));

    let relays: usize = first.stations.values().map(|p| p.relays.len()).sum();
    println!(
        "place(): {STATIONS} stations, {NODES} nodes, {relays} relays after the first placement; \
         median of {RUNS} runs"
    );
    println!(
        "{:<14} {:>10} {:>10} {:>10} {:>7} {:>9}",
        "case", "median ms", "min ms", "max ms", "moved", "unplaced"
    );
    for c in &cases {
        println!(
            "{:<14} {:>10} {:>10} {:>10} {:>7} {:>9}",
            c.name,
            ms(c.median),
            ms(c.min),
            ms(c.max),
            c.outcome.moved,
            c.outcome.unplaced.len()
        );
    }
    if cases[0].median >= Duration::from_secs(1) {
        eprintln!(
            "bench-placement: the first placement took {} ms (limit 1000 ms)",
            ms(cases[0].median)
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

//! Benchmark (not a test): TURN relaying of real WebRTC peers through a node's coturn, as Onda
//! runs and meters it.
//!
//! `onda control-plane` and one `onda agent` (release builds, `ONDA_BIN`) on SQLite, the agent
//! running the Debian coturn on loopback ports as it does on a node (`turn.enabled = on`).
//! Users of a Premium tenant get their ICE servers from `GET /v1/me/ice-servers` (the node's
//! `turn:` URLs and a time-limited credential each: one user per connection, as in real calls,
//! each within coturn's per-user quota). Then for each count of `BENCH_PAIRS` (`1,4,8,16,24,32`)
//! one headless Debian chromium (`tests/browser/relay.mjs`) holds that many pairs of
//! relay-only RTCPeerConnections, each end sending the fake camera (320×240, 15 fps) and
//! microphone, for `BENCH_SECONDS` (20). Reported per count: connections that came up over a
//! relay on both sides, the relayed rate and video frames decoded a second per connection (from
//! the peers' own stats), coturn's and chromium's CPU, and the bytes coturn logged for the run
//! as Onda metered them (the tenant's `turn_bytes` on `GET /v1/realtime/usage`) against what
//! the peers' transports counted. Exit 1 when a pair does not come up relayed, a connection decodes
//! no video in the window, or the metered bytes are below the peers' or more than 5 % above. Run it with
//! `scripts/bench-turn.sh`.

#![forbid(unsafe_code)]

use onda_tests::bench::{clock_ticks, tree, tree_cpu_seconds};
use onda_tests::cluster::ControlPlane;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::process::Proc;
use onda_tests::turn::{TurnPorts, agent_env, require_coturn};
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-turn-012345678";

/// The CPU-seconds of the agent's coturn so far (0 when it is not running).
fn coturn_cpu(agent_pid: u32, ticks: f64) -> f64 {
    tree(agent_pid)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "turnserver")
        })
        .map(|p| tree_cpu_seconds(p, ticks))
        .sum()
}

/// TURN ports with room for `relays` relays: each connection allocates one over UDP and one
/// over TCP (both URLs are in its ICE servers), so a pair takes four relay ports.
fn relay_ports(relays: usize) -> TurnPorts {
    let mut ports = TurnPorts::free();
    let wanted = u16::try_from(relays).unwrap_or(u16::MAX).max(100);
    let range = ports.min_port..ports.min_port.saturating_add(wanted);
    let busy = range
        .clone()
        .filter(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_err())
        .count();
    assert!(busy < 10, "{busy} of the UDP ports {range:?} are busy");
    ports.max_port = range.end - 1;
    ports
}

/// The tenant's relayed bytes as Onda metered them.
async fn metered(cp: &ControlPlane, tenant: &str) -> u64 {
    let path = format!("/v1/realtime/usage?tenant_id={tenant}");
    let (s, usage) = cp.call(Method::GET, &path, None).await;
    assert_eq!(s, 200, "{usage}");
    usage["total"]["turn_bytes"].as_u64().unwrap_or(0)
}

/// Waits until the metered bytes stop growing for 5 s (coturn logs a session's last bytes when
/// it closes; the agent reports them within its usage interval), at most 90 s.
async fn settled(cp: &ControlPlane, tenant: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = metered(cp, tenant).await;
    let mut still = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = metered(cp, tenant).await;
        if now != last {
            (last, still) = (now, Instant::now());
        } else if still.elapsed() >= Duration::from_secs(5) {
            break;
        }
    }
    last
}

/// `users` users of a Premium tenant and the ICE servers of each (a credential per user, as
/// each party of a real call has): (tenant id, [iceServers]).
async fn users_ice(cp: &ControlPlane, users: usize) -> (String, Vec<Value>) {
    let key = cp.tenant_key("Relay bench").await;
    let tenant = cp.tenant_id(&key).await;
    let mut ice = Vec::with_capacity(users);
    for i in 0..users {
        let token = cp
            .user_token(&key, &format!("fan-{i}"), &format!("Fan {i}"))
            .await;
        let (s, servers) = cp
            .tenant_call(&token, Method::GET, "/v1/me/ice-servers", None)
            .await;
        assert_eq!(s, 200, "{servers}");
        ice.push(servers["iceServers"].clone());
    }
    (tenant, ice)
}

/// One count of pairs: what the peers and the relay did.
struct Run {
    pairs: usize,
    /// Pairs relayed on both sides; connections that decoded video in the window.
    relayed: usize,
    decoding: usize,
    seconds: f64,
    /// Bytes the peers' transports sent and received: all of them (read after the tracks
    /// stopped, before the close), and in the window.
    peer_bytes: u64,
    window_bytes: u64,
    frames: u64,
    audio: u64,
    /// Cores' worth of CPU over the window (coturn, chromium) and coturn's over the whole run.
    coturn_cpu: f64,
    chromium_cpu: f64,
    coturn_run: f64,
    metered: u64,
}

/// The most coturn's bytes may exceed the peers' (its TURN framing and its own STUN traffic:
/// refreshes, permissions, connectivity checks).
const METERED_OVER_PEERS: f64 = 1.05;

fn sum(v: &Value, field: &str) -> u64 {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c[field].as_u64())
        .sum()
}

async fn run(fx: &ClusterFixture, tenant: &str, ice: &[Value], pairs: usize, seconds: u64) -> Run {
    let ticks = clock_ticks();
    let agent = fx.agents[0].proc.pid();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/relay.mjs");
    let before = settled(&fx.cp, tenant).await;
    let coturn_before = coturn_cpu(agent, ticks);
    let page = format!("{}/healthz", fx.cp.api);
    let started = Instant::now();
    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[
            &script.display().to_string(),
            &page,
            &Value::from(ice.to_vec()).to_string(),
            &pairs.to_string(),
            &seconds.to_string(),
        ],
    );
    // CPU read at the page's `window start` and `window end` lines: (coturn, chromium, when).
    let mut marks: Vec<(f64, f64, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 120);
    let exit = loop {
        if Instant::now() >= deadline {
            // Playwright starts the browser in a process group of its own: killed here.
            onda_tests::bench::kill_descendants(node.pid());
            panic!(
                "chromium still running 120 s after its window\n{}",
                node.logs()
            );
        }
        let seen = ["window start", "window end"]
            .iter()
            .filter(|m| node.stdout().contains(*m))
            .count();
        if seen > marks.len() {
            let chromium = tree_cpu_seconds(node.pid(), ticks);
            marks.push((coturn_cpu(agent, ticks), chromium, Instant::now()));
        }
        if let Some(exit) = node.try_exit() {
            break exit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let coturn_run = coturn_cpu(agent, ticks) - coturn_before;
    let stdout = node.stdout();
    let out: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON from chromium ({exit:?}): {e}\n{}", node.logs()));
    if let Some(e) = out["error"].as_str() {
        panic!("chromium: {e}\n{}", node.logs());
    }
    let after = settled(&fx.cp, tenant).await;
    let (start, end) = (&out["start"], &out["end"]);
    let each = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let relayed = each(end)
        .iter()
        .filter(|c| c["local"] == "relay" && c["remote"] == "relay")
        .count();
    let decoding = each(start)
        .iter()
        .zip(each(end).iter())
        .filter(|(a, b)| b["frames"].as_u64() > a["frames"].as_u64())
        .count();
    let [(coturn_0, chromium_0, t0), (coturn_1, chromium_1, t1)] = marks[..] else {
        panic!("the page never marked its window\n{}", node.logs());
    };
    let window = t1.duration_since(t0).as_secs_f64().max(0.001);
    Run {
        pairs,
        relayed: relayed / 2,
        decoding,
        seconds: out["elapsed"].as_f64().unwrap_or(0.0),
        peer_bytes: sum(&out["final"], "bytes"),
        window_bytes: sum(end, "bytes") - sum(start, "bytes"),
        frames: sum(end, "frames") - sum(start, "frames"),
        audio: sum(end, "audio") - sum(start, "audio"),
        coturn_cpu: (coturn_1 - coturn_0) / window,
        chromium_cpu: (chromium_1 - chromium_0) / window,
        coturn_run: coturn_run / wall.max(0.001),
        metered: after - before,
    }
}

async fn bench() -> bool {
    require_coturn();
    let pairs: Vec<usize> = std::env::var("BENCH_PAIRS")
        .unwrap_or_else(|_| "1,4,8,16,24,32".to_string())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .filter(|&p| p > 0)
        .collect();
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("TURN relay benchmark: pairs {pairs:?}, {seconds} s each");
    let most = pairs.iter().copied().max().unwrap_or(1);
    let mut fx = ClusterFixture::start_on(ClusterSpec {
        admin_token: ADMIN,
        ..ClusterSpec::default()
    })
    .await
    .expect("SQLite is always there");
    fx.join_with_env("edge-turn", agent_env(&relay_ports(4 * most + 20)))
        .await;
    fx.wait_ready(1, Duration::from_secs(30)).await;
    let (tenant, ice) = users_ice(&fx.cp, 2 * most).await;
    println!("ICE servers of the first user: {}", ice[0]);
    println!();
    println!(
        "| pairs | relayed both sides | connections decoding video | relayed Mbit/s | video frames decoded /s per connection | audio packets /s per connection | coturn CPU % (window; whole run) | chromium CPU % | bytes the peers' transports carried | bytes metered (coturn's log) | metered / peers |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    for &p in &pairs {
        let r = run(&fx, &tenant, &ice, p, seconds).await;
        let conns = (2 * r.pairs) as f64;
        let secs = r.seconds.max(0.001);
        // The peers' window is `seconds`; coturn's and chromium's CPU cover chromium's whole
        // run (start-up, connections and close included), so their share is over its length.
        let ratio = r.metered as f64 / r.peer_bytes.max(1) as f64;
        println!(
            "| {} | {}/{} | {}/{} | {:.2} | {:.1} | {:.1} | {:.1}; {:.1} | {:.1} | {} | {} | {:.3} |",
            r.pairs,
            r.relayed,
            r.pairs,
            r.decoding,
            2 * r.pairs,
            r.window_bytes as f64 * 8.0 / 2.0 / secs / 1e6,
            r.frames as f64 / secs / conns,
            r.audio as f64 / secs / conns,
            r.coturn_cpu * 100.0,
            r.coturn_run * 100.0,
            r.chromium_cpu * 100.0,
            r.peer_bytes,
            r.metered,
            ratio,
        );
        if r.relayed != r.pairs
            || r.decoding != 2 * r.pairs
            || r.metered < r.peer_bytes
            || ratio > METERED_OVER_PEERS
        {
            ok = false;
        }
    }
    println!();
    println!(
        "relayed Mbit/s: the peers' transport bytes in the window (sent plus received, halved: each packet is sent by one end and received by the other); \
         CPU % of one core over the window (coturn also over chromium's whole run: set-up and close included); \
         metered / peers at most {METERED_OVER_PEERS}"
    );
    if !ok {
        println!(
            "FAILED: a pair did not come up relayed, a connection decoded no video, or coturn's metered bytes were not within [1, {METERED_OVER_PEERS}] of the peers'"
        );
    }
    ok
}

fn main() {
    onda_tests::bench::main_of(bench());
}

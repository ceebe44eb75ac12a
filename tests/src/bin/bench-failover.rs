//! Failover benchmark: a control plane on a real etcd (or `COORDINATOR=memory`), three agents,
//! one station; the node carrying the station is killed (SIGKILL) several times and the time
//! until a listener gets audio through the redirector from another node is measured each time
//! (a fresh node joins after each kill so three stay up). `--dev` does the same to the demo
//! station of `onda dev --nodes 3`, a fresh one each round. Run with `scripts/bench-cluster.sh`.
#![forbid(unsafe_code)]

use onda_tests::cluster::{Failover, kill_and_time, kill_carrier};
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::process::Proc;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dev = args.iter().any(|a| a == "--dev");
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5);
    let (what, mut times) = if dev {
        (
            "`onda dev --nodes 3` with its defaults".to_string(),
            dev_rounds(rounds).await,
        )
    } else {
        cluster_rounds(rounds).await
    };
    times.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "failover (kill -9 to audio through the redirector), {what}, {rounds} rounds: \
         min {} ms, median {} ms, max {} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}

fn report(round: usize, f: &Failover) {
    println!(
        "round {round}: {} ms (the redirector named another node after {} ms)",
        f.audio.as_millis(),
        f.redirected.as_millis()
    );
}

/// A control plane on etcd with the production settings (`NODE_TTL_MS` overrides the lease);
/// a fresh node joins after each kill so three stay up.
async fn cluster_rounds(rounds: usize) -> (String, Vec<Duration>) {
    let ttl: u64 = std::env::var("NODE_TTL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        // The production default (cluster.node_ttl_ms).
        .unwrap_or(5000);
    // `COORDINATOR=memory`: one control plane with the in-process coordinator (the default
    // of a single control plane); otherwise etcd, as several replicas run.
    let etcd = std::env::var("COORDINATOR").map_or(true, |c| c != "memory");
    let mut fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: "bench-admin-token-0123456789",
        etcd,
        replica: "bench",
        node_ttl_ms: ttl,
        nodes: &["edge-1", "edge-2", "edge-3"],
        ..ClusterSpec::default()
    })
    .await;
    let mut joined = fx.agents.len();
    let station = fx.cp.station("Bench FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let mut times = Vec::new();
    for round in 1..=rounds {
        let f = kill_carrier(&fx.cp, &mut fx.agents, &slug, Duration::from_secs(30)).await;
        report(round, &f);
        times.push(f.audio);
        joined += 1;
        fx.join(&format!("edge-{joined}")).await;
    }
    let coordinator = if etcd {
        "etcd"
    } else {
        "in-process coordinator"
    };
    (format!("{coordinator}, node lease {ttl} ms"), times)
}

/// `onda dev --nodes 3` as a developer runs it, once per round (a fresh directory each time):
/// its demo station's carrying node is killed.
async fn dev_rounds(rounds: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    for round in 1..=rounds {
        let mut dev = Proc::dev(3, &[]);
        let info = dev
            .wait_json(".onda-dev/dev.json", Duration::from_secs(120))
            .await;
        let listen = info["listen_url"].as_str().expect("listen_url").to_string();
        let nodes: Vec<(String, u32)> = info["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                let pid = n["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
                (
                    n["edge_url"].as_str().unwrap_or("-").to_string(),
                    pid.expect("pid"),
                )
            })
            .collect();
        let f = kill_and_time(&listen, Duration::from_secs(30), |carrier: &str| {
            let (_, pid) = nodes
                .iter()
                .find(|(url, _)| carrier.starts_with(url.as_str()))
                .expect("the redirect names a dev node");
            let pid =
                rustix::process::Pid::from_raw(i32::try_from(*pid).expect("pid")).expect("a pid");
            rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9");
        })
        .await;
        report(round, &f);
        times.push(f.audio);
        dev.terminate();
        dev.wait_exit(Duration::from_secs(20)).await;
    }
    times
}

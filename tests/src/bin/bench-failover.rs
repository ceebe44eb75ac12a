//! Failover benchmark: a control plane on a real etcd, three agents, one station; the node
//! carrying the station is killed (SIGKILL) several times and the time until a listener gets
//! audio through the redirector from another node is measured each time (a fresh node joins
//! after each kill so three stay up). Run with `scripts/bench-cluster.sh`.
#![forbid(unsafe_code)]

use onda_tests::cluster::kill_carrier_and_time_failover;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use std::time::Duration;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let ttl: u64 = std::env::var("NODE_TTL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: "bench-admin-token-0123456789",
        etcd: true,
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
        let (t, _) =
            kill_carrier_and_time_failover(&fx.cp, &mut fx.agents, &slug, Duration::from_secs(30))
                .await;
        println!("round {round}: {} ms", t.as_millis());
        times.push(t);
        joined += 1;
        fx.join(&format!("edge-{joined}")).await;
    }
    times.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "failover (kill -9 to audio through the redirector), node lease {ttl} ms, {rounds} rounds: \
         min {} ms, median {} ms, max {} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}

//! Network partitions between a node and its control plane, with the production defaults
//! (`cluster.node_ttl_ms` 5000, `cluster.node_silence_ms` 1500, heartbeats every second): the
//! node's QUIC control channel goes through a UDP relay that drops every datagram both ways
//! while cut. A hiccup of 1 s keeps the connection and the stations where they are; a partition
//! of 5 s is taken for a dead node, its station moves to the other node, and when the network
//! heals the node comes back and no longer serves what moved.

use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::usage::UdpRelay;
use onda_tests::wait_for;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const ADMIN: &str = "partition-test-admin-token-012345";
const WAIT: Duration = Duration::from_secs(30);

/// A cluster with the production node lease, a node (`agents[0]`) reaching the control plane
/// only through the returned relay and carrying a station, and a spare node joined directly.
/// Returns the relay, the station's slug and its URL on the cut-off node.
async fn cluster_with_a_node_behind_a_relay() -> (ClusterFixture, UdpRelay, String, String) {
    let mut fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: ADMIN,
        node_ttl_ms: 5000,
        ..ClusterSpec::default()
    })
    .await;
    let relay = UdpRelay::start(fx.cp.quic.parse().expect("quic addr")).await;
    fx.join_via("edge-cut", &[relay.addr.to_string()]).await;
    fx.wait_ready(1, WAIT).await;
    // The only node when the station is made: it carries it.
    let station = fx.cp.station("Partition FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let first = wait_for("the station on the air", WAIT, || fx.cp.redirect(&slug)).await;
    assert!(first.starts_with(&fx.agents[0].edge_url), "{first}");
    fx.join("edge-spare").await;
    fx.wait_ready(2, WAIT).await;
    (fx, relay, slug, first)
}

/// A 1 s partition: the connection survives (keep-alives resume before the idle timeout), the
/// control plane takes nobody for dead, and the redirector names the same node throughout,
/// watched until well past the silence window.
#[tokio::test]
async fn a_one_second_partition_keeps_the_node_and_its_station() {
    let (fx, relay, slug, first) = cluster_with_a_node_behind_a_relay().await;
    let cut = Instant::now();
    relay.cut();
    let mut named = BTreeSet::new();
    let mut healed = false;
    // The partition's length is the test's input, and the window is what must stay quiet:
    // cut + the 1.5 s silence + time to move the station, twice over.
    while cut.elapsed() < Duration::from_secs(4) {
        if !healed && cut.elapsed() >= Duration::from_secs(1) {
            relay.heal();
            healed = true;
        }
        named.insert(fx.cp.redirect(&slug).await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(named, BTreeSet::from([first]), "the redirector stayed put");
    let node_logs = fx.agents[0].proc.logs();
    assert!(
        !node_logs.contains("retrying in about"),
        "the node kept its session:\n{node_logs}"
    );
    let cp_logs = fx.cp.proc.logs();
    assert!(
        !cp_logs.contains("taken for dead"),
        "nobody was taken for dead:\n{cp_logs}"
    );
}

/// A 5 s partition: the node is taken for dead after the silence window and its station moves
/// to the spare node while the partition lasts; once healed, the node reconnects by itself and
/// stops serving the station, so only the spare carries it.
#[tokio::test]
async fn a_five_second_partition_moves_the_station_and_the_node_comes_back_without_it() {
    let (fx, relay, slug, first) = cluster_with_a_node_behind_a_relay().await;
    let spare = fx.agents[1].edge_url.clone();
    let cut = Instant::now();
    relay.cut();
    let moved = wait_for("the station on the spare node", WAIT, || async {
        let url = fx.cp.redirect(&slug).await?;
        url.starts_with(&spare).then_some(url)
    })
    .await;
    let took = cut.elapsed();
    eprintln!("partition to the spare named: {} ms", took.as_millis());
    assert!(
        took < Duration::from_secs(5),
        "moved while the partition lasted, not after it: {took:?}"
    );
    assert!(
        fx.cp.proc.logs().contains("taken for dead"),
        "{}",
        fx.cp.proc.logs()
    );
    tokio::time::sleep_until((cut + Duration::from_secs(5)).into()).await;
    relay.heal();
    // Back: the node reconnects, learns the station is no longer its, and its mount goes.
    let http = onda_shared::http::client();
    wait_for("the cut node to stop serving the station", WAIT, || async {
        let status = http.get(&first).send().await.ok()?.status().as_u16();
        (status == 404).then_some(())
    })
    .await;
    wait_for("the cut node connected again", WAIT, || async {
        let logs = fx.agents[0].proc.logs();
        (logs.matches("connected to control plane").count() >= 2).then_some(())
    })
    .await;
    fx.wait_ready(2, WAIT).await;
    assert_eq!(
        fx.cp.redirect(&slug).await,
        Some(moved),
        "the spare keeps it"
    );
}

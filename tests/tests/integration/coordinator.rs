//! The coordinator contract against a real etcd, and etcd's election handing over when a
//! leader's lease dies.

use onda_control_plane::coordinator::Coordinator as _;
use onda_control_plane::coordinator::etcd::EtcdCoordinator;
use onda_tests::etcd::Etcd;
use std::time::{Duration, Instant};

#[tokio::test]
async fn etcd_coordinator_meets_the_contract() {
    let etcd = Etcd::start().await;
    let c = EtcdCoordinator::connect(std::slice::from_ref(&etcd.endpoint), "/onda-test")
        .await
        .expect("connect");
    onda_control_plane::coordinator::conformance(&c)
        .await
        .expect("contract");
}

#[tokio::test]
async fn etcd_leadership_passes_when_the_leader_lease_expires() {
    let etcd = Etcd::start().await;
    let endpoints = std::slice::from_ref(&etcd.endpoint);
    let a = EtcdCoordinator::connect(endpoints, "/o").await.expect("a");
    let b = EtcdCoordinator::connect(endpoints, "/o").await.expect("b");
    let la = a.grant(Duration::from_secs(1)).await.expect("lease a");
    a.campaign("/leader", "a", la).await.expect("a campaigns");
    assert_eq!(
        a.leader("/leader").await.expect("leader").as_deref(),
        Some("a")
    );
    let lb = b.grant(Duration::from_secs(10)).await.expect("lease b");
    let started = Instant::now();
    let b_wins = tokio::spawn(async move { b.campaign("/leader", "b", lb).await.map(|()| b) });
    // a never keeps its lease alive, as if its process had died.
    let b = tokio::time::timeout(Duration::from_secs(10), b_wins)
        .await
        .expect("b became leader within 10 s")
        .expect("join")
        .expect("campaign");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        b.leader("/leader").await.expect("leader").as_deref(),
        Some("b")
    );
    assert!(!a.keep_alive(la).await.expect("keep-alive answers"));
}

#[tokio::test]
async fn etcd_unreachable_is_a_clear_error() {
    let port = onda_tests::process::free_port();
    let err = EtcdCoordinator::connect(&[format!("http://127.0.0.1:{port}")], "/o")
        .await
        .expect_err("nothing listens there");
    assert!(format!("{err:#}").contains(&port.to_string()), "{err:#}");
}

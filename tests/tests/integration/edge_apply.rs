//! `Edge::apply` as the agent uses it, in process: mounts are added, removed and changed at
//! runtime while a listener of an unchanged mount keeps its connection.

use onda_edge::{Edge, EdgeConfig, MountConfig};
use onda_tests::edge::{RawListener, START, ffmpeg_source};
use onda_tests::wait_for;

fn mount(path: &str, password: &str) -> MountConfig {
    MountConfig::new(path, password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_changes_mounts_without_disturbing_listeners() {
    let mut config = EdgeConfig::default();
    config.http.listen = "127.0.0.1:0".parse().expect("address");
    config.mounts = vec![mount("/a", "pw-a"), mount("/b", "pw-b")];
    let edge = Edge::start(config.clone()).await.expect("edge starts");
    let addr = edge.addr().to_string();
    let _src = ffmpeg_source(&format!("icecast://source:pw-a@{addr}/a"), 440, &[]);
    wait_for("a source on /a", START, || async {
        edge.stats()
            .iter()
            .find(|m| m.path == "/a")
            .and_then(|m| m.source.clone())
    })
    .await;
    let listener = RawListener::connect(&addr, "/a", false).await;
    listener.wait_more_audio(20_000).await;

    // Change /a, drop /b, add /c.
    let mut next = config.clone();
    let mut a = mount("/a", "pw-a");
    a.name = Some("Renamed".to_string());
    a.max_listeners = Some(5);
    next.mounts = vec![a, mount("/c", "pw-c")];
    edge.apply(next.clone()).expect("apply");
    listener.wait_more_audio(20_000).await;
    assert!(
        !listener.heard().closed,
        "the /a listener kept its connection"
    );

    let stats = edge.stats();
    let paths: Vec<&str> = stats.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, vec!["/a", "/c"]);
    let a = &stats[0];
    assert_eq!(a.listeners, 1);
    assert!(a.source.is_some(), "the source of /a was not touched");
    assert_eq!(
        onda_shared::http::get(format!("http://{addr}/b"))
            .await
            .expect("get")
            .status(),
        404
    );

    // A source can feed the new mount.
    let _src_c = ffmpeg_source(&format!("icecast://source:pw-c@{addr}/c"), 220, &[]);
    wait_for("a source on /c", START, || async {
        edge.stats()
            .iter()
            .find(|m| m.path == "/c")
            .and_then(|m| m.source.clone())
    })
    .await;

    // An invalid configuration is refused and changes nothing.
    let mut bad = next.clone();
    bad.mounts.push(mount("/a", "dup"));
    assert!(edge.apply(bad).is_err());
    assert_eq!(edge.stats().len(), 2);
    listener.wait_more_audio(8_000).await;
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_relay_restarts_it_cleanly() {
    let mut origin_cfg = EdgeConfig::default();
    origin_cfg.http.listen = "127.0.0.1:0".parse().expect("address");
    origin_cfg.mounts = vec![mount("/live", "pw")];
    let origin = Edge::start(origin_cfg).await.expect("origin starts");
    let _src = ffmpeg_source(
        &format!("icecast://source:pw@{}/live", origin.addr()),
        440,
        &[],
    );

    let mut cfg = EdgeConfig::default();
    cfg.http.listen = "127.0.0.1:0".parse().expect("address");
    cfg.relays = vec![onda_edge::RelayConfig {
        path: "/relayed".to_string(),
        url: format!("http://{}/live", origin.addr())
            .parse()
            .expect("URL"),
        max_listeners: None,
        listener_group: None,
        relay_key: None,
        hls: true,
    }];
    let edge = Edge::start(cfg.clone()).await.expect("edge starts");
    let relayed = || async {
        edge.stats()
            .iter()
            .find(|m| m.path == "/relayed")
            .and_then(|m| m.source.clone())
    };
    wait_for("the relay to connect", START, relayed).await;
    // A new limit reaches the mount without a reconnect.
    let first = relayed().await.map(|s| s.connected_since);
    let mut next = cfg.clone();
    next.relays[0].max_listeners = Some(10);
    edge.apply(next.clone()).expect("apply");
    let listener = RawListener::connect(&edge.addr().to_string(), "/relayed", false).await;
    listener.wait_more_audio(4_000).await;
    assert_eq!(
        relayed().await.map(|s| s.connected_since),
        first,
        "no reconnect for a limit"
    );
    // A new URL restarts the relay; the old session must go so the new one can attach.
    for n in 1..=3 {
        let before = relayed().await.map(|s| s.connected_since);
        next.relays[0].url = format!("http://{}/live?try={n}", origin.addr())
            .parse()
            .expect("URL");
        edge.apply(next.clone()).expect("apply");
        wait_for("the restarted relay to connect", START, || async {
            relayed()
                .await
                .filter(|s| Some(s.connected_since) != before)
        })
        .await;
    }
    edge.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_reach_ipv6_upstreams() {
    let mut origin_cfg = EdgeConfig::default();
    origin_cfg.http.listen = "[::1]:0".parse().expect("address");
    origin_cfg.mounts = vec![mount("/live", "pw")];
    let origin = Edge::start(origin_cfg).await.expect("origin starts on ::1");
    let port = origin.addr().port();
    let _src = ffmpeg_source(&format!("icecast://source:pw@[::1]:{port}/live"), 440, &[]);
    let mut cfg = EdgeConfig::default();
    cfg.http.listen = "127.0.0.1:0".parse().expect("address");
    cfg.relays = vec![onda_edge::RelayConfig {
        path: "/relayed".to_string(),
        url: format!("http://[::1]:{port}/live").parse().expect("URL"),
        max_listeners: None,
        listener_group: None,
        relay_key: None,
        hls: true,
    }];
    let edge = Edge::start(cfg).await.expect("edge starts");
    wait_for("the relay to connect over IPv6", START, || async {
        edge.stats()
            .iter()
            .find(|m| m.path == "/relayed")
            .and_then(|m| m.source.clone())
    })
    .await;
    edge.shutdown().await;
    origin.shutdown().await;
}

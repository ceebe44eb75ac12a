//! The public now-playing feeds under load: one snapshot per change of a station whatever the
//! number of subscribers (watched through `onda_nowplaying_snapshot_builds_total` of a real
//! cluster whose AutoDJ changes tracks), feeds capped per client address (429) and in total
//! (503) with problem documents, and song ids that are not content hashes.

use onda_control_plane::config::NowPlayingSettings;
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::fixture::ClusterFixture;
use onda_tests::wait_for;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// A client whose connections leave from `ip` (any 127.0.0.x reaches a loopback server).
fn client_from(ip: &str) -> reqwest::Client {
    onda_shared::http::client_builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// Reads the `event: nowplaying` payloads of an open feed into `tx` (with the feed's index)
/// until the feed or the receiver ends.
async fn read_feed(
    mut resp: reqwest::Response,
    index: usize,
    tx: mpsc::UnboundedSender<(usize, Value)>,
) {
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if !event.contains("event: nowplaying") {
                continue;
            }
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            let Ok(np) = serde_json::from_str(&data) else {
                return;
            };
            if tx.send((index, np)).is_err() {
                return;
            }
        }
    }
}

/// A Prometheus series of a control plane at `api` (0 when absent).
async fn metric(api: &str, name: &str) -> f64 {
    let text = onda_shared::http::get(format!("{api}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn title_of(np: &Value) -> String {
    np["now_playing"]["song"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn every_feed_gets_each_change_from_one_snapshot_build() {
    let fx = ClusterFixture::start(1).await;
    let cp = &fx.cp;
    let key = cp.tenant_key("Feeds Inc").await;
    let (sid, slug) = cp
        .autodj_station(
            &key,
            "Feed FM",
            json!([{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]),
        )
        .await;
    let media = tempfile::tempdir().expect("dir");
    let tones = [
        ("one.mp3", 440, 3, "Feeder", "Song One"),
        ("two.mp3", 660, 3, "Feeder", "Song Two"),
    ];
    let hashes: Vec<String> = cp
        .upload_rotation(&key, &sid, media.path(), "Loop", &tones)
        .await
        .iter()
        .map(|m| m["sha256"].as_str().expect("sha256").to_string())
        .collect();
    let public = format!("{}/api/nowplaying/{slug}", cp.api);
    wait_for("a track playing", Duration::from_secs(60), || async {
        let np: Value = onda_shared::http::get(&public)
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (!title_of(&np).is_empty()).then_some(())
    })
    .await;

    // 40 feeds from 4 addresses (within the default of 16 per address).
    const FEEDS: usize = 40;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..FEEDS {
        let client = client_from(&format!("127.0.0.{}", 1 + i % 4));
        let resp = client
            .get(format!("{public}/events"))
            .send()
            .await
            .expect("feed");
        assert_eq!(resp.status().as_u16(), 200);
        tokio::spawn(read_feed(resp, i, tx.clone()));
    }
    let mut first: Vec<Option<String>> = vec![None; FEEDS];
    let mut events = Vec::new();
    while first.iter().any(Option::is_none) {
        let (i, np) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("every feed's first answer")
            .expect("feeds open");
        first[i].get_or_insert_with(|| title_of(&np));
        events.push(np);
    }
    assert_eq!(
        metric(&cp.api, "onda_nowplaying_subscribers").await,
        FEEDS as f64
    );
    let builds_before = metric(&cp.api, "onda_nowplaying_snapshot_builds_total").await;

    // The next track change reaches every feed.
    let mut changed = [false; FEEDS];
    while changed.iter().any(|c| !c) {
        let (i, np) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("every feed told of the track change")
            .expect("feeds open");
        if Some(title_of(&np)) != first[i] {
            changed[i] = true;
        }
        events.push(np);
    }
    let builds = metric(&cp.api, "onda_nowplaying_snapshot_builds_total").await - builds_before;
    assert!(
        (1.0..=4.0).contains(&builds),
        "{builds} snapshot builds for one track change seen by {FEEDS} feeds"
    );

    // Song ids are opaque: never the content hash nodes fetch media by.
    for np in &events {
        let songs = std::iter::once(&np["now_playing"]["song"]).chain(
            np["song_history"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| &h["song"]),
        );
        for song in songs {
            let id = song["id"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{np}");
            assert!(
                !hashes
                    .iter()
                    .any(|h| h.contains(id) || id.contains(h.as_str())),
                "{np}"
            );
        }
    }
    let np: Value = onda_shared::http::get(&public)
        .await
        .expect("np")
        .json()
        .await
        .expect("json");
    let id = np["now_playing"]["song"]["id"].as_str().unwrap_or_default();
    assert!(!id.is_empty() && !hashes.contains(&id.to_string()), "{np}");
}

/// A problem document with this status, a sentence naming `key`, and a Retry-After.
async fn assert_problem(resp: reqwest::Response, status: u16, key: &str) {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap_or_default(),
        "application/problem+json"
    );
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.expect("problem json");
    assert_eq!(body["status"], status, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(key) && detail.contains(' '), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_are_capped_per_address_and_in_total() {
    let cp = TestControlPlane::start_with(Backend::Sqlite, |c| {
        c.nowplaying = NowPlayingSettings {
            max_subscribers_per_ip: 2,
            max_subscribers: 3,
        };
    })
    .await
    .expect("SQLite is always there");
    let (_, key) = cp.tenant_with_key("Capped", "plan_premium").await;
    let station = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "Capped FM", "mounts": [{"path": "/a.mp3", "format": "mp3", "bitrate_kbps": 64}]}),
        )
        .await
        .expect(201)
        .body;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let events = format!("{}/api/nowplaying/{slug}/events", cp.url);
    wait_for(
        "the station in the view",
        Duration::from_secs(20),
        || async {
            let r = onda_shared::http::get(format!("{}/api/nowplaying/{slug}", cp.url))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;

    let (a, b, c) = (
        client_from("127.0.0.1"),
        client_from("127.0.0.2"),
        client_from("127.0.0.3"),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut open = Vec::new();
    for (i, client) in [&a, &a, &b].into_iter().enumerate() {
        let resp = client.get(&events).send().await.expect("feed");
        assert_eq!(resp.status().as_u16(), 200);
        open.push(tokio::spawn(read_feed(resp, i, tx.clone())));
    }
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("each feed answers at once")
            .expect("open");
    }
    // A third feed from the same address; a fourth feed in all from a new one.
    let resp = a.get(&events).send().await.expect("refused feed");
    // A refused feed's connection (in the feeds' own lane) is not kept for other requests.
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_problem(resp, 429, "nowplaying.max_subscribers_per_ip").await;
    let resp = c.get(&events).send().await.expect("refused feed");
    assert_problem(resp, 503, "nowplaying.max_subscribers").await;
    // The public JSON is no feed: it still answers.
    let r = onda_shared::http::get(format!("{}/api/nowplaying/{slug}", cp.url))
        .await
        .expect("json");
    assert_eq!(r.status().as_u16(), 200);

    // A feed that ends gives its place back.
    open.remove(0).abort();
    let resp = wait_for("a place given back", Duration::from_secs(30), || async {
        let r = c.get(&events).send().await.ok()?;
        (r.status() == 200).then_some(r)
    })
    .await;
    drop(resp);
    cp.stop().await;
}

//! The AutoDJ through the whole cluster: media uploaded to the control plane, fetched by the
//! origin node by hash, played in playlist order through the redirector, now-playing in the
//! public JSON and its push feed, and a live DJ with an account taking over and leaving.

use onda_tests::edge::{RawListener, ffmpeg_source};
use onda_tests::fixture::ClusterFixture;
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// Reads `n` `event: nowplaying` payloads from the SSE feed.
async fn sse_events(url: &str, n: usize) -> Vec<Value> {
    let mut resp = onda_shared::http::get(url).await.expect("sse");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("an event within 30 s")
            .expect("read")
            .expect("the feed stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains("event: nowplaying") {
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                out.push(serde_json::from_str(&data).expect("event json"));
            }
        }
    }
    out
}

fn title_of(np: &Value) -> String {
    np["now_playing"]["song"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn uploaded_media_plays_on_the_origin_with_now_playing_and_a_live_dj() {
    let fx = ClusterFixture::start(1).await;
    let cp = &fx.cp;

    let key = cp.tenant_key("Tracks Inc").await;
    let (sid, slug) = cp
        .autodj_station(
            &key,
            "Track FM",
            json!([
                {"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 128},
                {"path": "/radio.aac", "format": "aac", "bitrate_kbps": 64},
            ]),
        )
        .await;

    let media = tempfile::tempdir().expect("dir");
    let tones = [
        ("one.mp3", 440, 5, "Artist One", "Song One"),
        ("two.flac", 550, 5, "Artist Two", "Song Two"),
        ("three.m4a", 660, 5, "Artist Three", "Song Three"),
    ];
    cp.upload_rotation(&key, &sid, media.path(), "Daytime", &tones)
        .await;

    // The origin fetches the files by hash and plays them; listeners go through the redirector.
    let url = wait_for("the station on the air", Duration::from_secs(60), || {
        cp.redirect(&slug)
    })
    .await;
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').expect("path"));
    let listener = RawListener::connect(addr, path, true).await;
    wait_for("the playlist in order", Duration::from_secs(40), || {
        let titles = listener.heard().titles;
        async move {
            let mut seq: Vec<&str> = titles.iter().map(String::as_str).collect();
            seq.dedup();
            seq.windows(3)
                .any(|w| {
                    w == [
                        "Artist One - Song One",
                        "Artist Two - Song Two",
                        "Artist Three - Song Three",
                    ] || w
                        == [
                            "Artist Two - Song Two",
                            "Artist Three - Song Three",
                            "Artist One - Song One",
                        ]
                        || w == [
                            "Artist Three - Song Three",
                            "Artist One - Song One",
                            "Artist Two - Song Two",
                        ]
                })
                .then_some(())
        }
    })
    .await;

    // Public now-playing: current song, next, history, listeners; no key needed.
    let public = format!("{}/api/nowplaying/{slug}", cp.api);
    let np: Value = wait_for(
        "now-playing with history",
        Duration::from_secs(20),
        || async {
            let np: Value = onda_shared::http::get(&public)
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (np["song_history"].as_array()?.len() >= 2 && np["listeners"]["current"].as_u64()? >= 1)
                .then_some(np)
        },
    )
    .await;
    assert_eq!(np["station"]["shortcode"], slug.as_str());
    assert_eq!(np["live"]["is_live"], false);
    assert_eq!(np["now_playing"]["source"], "autodj");
    assert!(
        np["now_playing"]["duration"].as_u64().unwrap_or(0) >= 4,
        "{np}"
    );
    assert!(title_of(&np).starts_with("Artist"), "{np}");
    assert!(
        np["playing_next"]["song"]["text"].as_str().is_some(),
        "{np}"
    );
    let (s, panel) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("/v1/stations/{sid}/nowplaying"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{panel}");
    assert_eq!(panel["station"]["id"], sid.as_str());
    // The song history API has what now-playing listed, newest first, and its CSV the same.
    let (s, history) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("/v1/stations/{sid}/history"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{history}");
    let items = history["items"].as_array().expect("items");
    let played: Vec<&str> = items.iter().filter_map(|h| h["text"].as_str()).collect();
    for h in np["song_history"].as_array().expect("history") {
        let text = h["song"]["text"].as_str().expect("text");
        assert!(played.contains(&text), "{text} missing from {history}");
    }
    let starts: Vec<u64> = items
        .iter()
        .filter_map(|h| h["started_at_ms"].as_u64())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] > w[1]), "{history}");
    assert!(items.iter().all(|h| h["source"] == "autodj"), "{history}");
    let csv = cp
        .http
        .get(format!("{}/v1/stations/{sid}/history?format=csv", cp.api))
        .bearer_auth(&key)
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("csv body");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("started_at,duration_ms,source,streamer,artist,title,text,media_sha256")
    );
    assert!(lines.count() >= items.len(), "{csv}");

    // The push feed sends the answer at once and again when the track changes.
    let events = sse_events(&format!("{public}/events"), 2).await;
    assert_ne!(title_of(&events[0]), title_of(&events[1]), "{events:?}");

    // A DJ with an account goes live on the origin's live mount: listeners hear the show with
    // the DJ's title; the DJ leaves and the AutoDJ is back, nobody disconnected.
    let (s, dj) = cp
        .tenant_call(
            &key,
            Method::POST,
            &format!("/v1/stations/{sid}/streamers"),
            Some(
                json!({"username": "nova", "password": "friday-night", "display_name": "DJ Nova"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{dj}");
    let (_, live) = cp
        .tenant_call(&key, Method::GET, &format!("/v1/stations/{sid}/live"), None)
        .await;
    let ingest = live["icecast_url"]
        .as_str()
        .expect("the station is placed")
        .replace("USER:PASSWORD", "nova:friday-night");
    // The account reaches the node with the next desired state.
    let dj_proc = wait_for("the DJ accepted", Duration::from_secs(20), || {
        let (ingest, public) = (ingest.clone(), public.clone());
        async move {
            let p = ffmpeg_source(&ingest, 1000, &["-metadata", "title=DJ Nova Live"]);
            // Not accepted yet: this ffmpeg is dropped (killed) and the next try starts another.
            wait_for_live(&public).await.then_some(p)
        }
    })
    .await;
    let np: Value = onda_shared::http::get(&public)
        .await
        .expect("np")
        .json()
        .await
        .expect("json");
    assert_eq!(np["live"]["is_live"], true, "{np}");
    assert_eq!(np["live"]["streamer_name"], "DJ Nova", "{np}");
    assert_eq!(np["now_playing"]["source"], "live");
    drop(dj_proc);
    wait_for("the AutoDJ back", Duration::from_secs(10), || async {
        let np: Value = onda_shared::http::get(&public)
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (np["live"]["is_live"] == false && title_of(&np).starts_with("Artist")).then_some(())
    })
    .await;
    listener.wait_more_audio(16 * 1024).await;
    assert!(!listener.heard().closed);
}

/// True once now-playing says a DJ is live (within 10 s).
async fn wait_for_live(public: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = onda_shared::http::get(public).await
            && let Ok(np) = r.json::<Value>().await
            && np["live"]["is_live"] == true
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

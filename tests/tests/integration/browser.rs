//! Web players on another origin, in a real browser: Debian's chromium driven by playwright-core
//! (tests/browser, installed by `scripts/install-deps.sh test`) loads a page that the test serves
//! from another origin (127.0.0.2) and plays Onda's public URLs as web players do: a `fetch`
//! with `Icy-MetaData: 1` from an edge mount (a CORS preflight), an `<audio crossorigin>` through
//! the control plane's `/listen` redirect, hls.js through `/watch` to a live stream, hls.js
//! through `/listen/…/{mount}.m3u8` to a mount's audio HLS, and the public now-playing JSON.

use onda_tests::edge::{EdgeNode, ffmpeg_rtmp};
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::process::Proc;
use onda_tests::wait_for;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

const PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>player</title>\
    <script src=\"/hls.js\"></script></head><body></body></html>";

/// A static site on another origin than the cluster's (127.0.0.2, a port of its own): the test
/// page and hls.js. Returns its URL; it serves until the test ends.
async fn other_origin_site() -> String {
    let hls = std::fs::read(browser_dir().join("node_modules/hls.js/dist/hls.min.js"))
        .expect("hls.js is installed: run scripts/install-deps.sh test");
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let addr = listener.local_addr().expect("addr");
    let hls = std::sync::Arc::new(hls);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let hls = hls.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let (ctype, body): (&str, &[u8]) = if line.starts_with("GET /hls.js ") {
                    ("text/javascript", &hls)
                } else {
                    ("text/html; charset=utf-8", PAGE.as_bytes())
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.write_all(body).await;
            });
        }
    });
    format!("http://{addr}/")
}

/// A cluster of one node carrying a station (the control plane's demo tone on `/radio.mp3`) and
/// a live stream published by ffmpeg over RTMP; chromium on another origin plays all three
/// ways. Before the fix the fetch failed (the preflight named the allowed origin twice) and
/// the two redirects were refused (no CORS on them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_player_on_another_origin_plays_mounts_redirects_and_hls() {
    let script = browser_dir().join("cors.mjs");
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/install-deps.sh test"
    );
    let fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: "browser-test-admin-token-0123456789",
        node_ttl_ms: 1000,
        nodes: &["web-1"],
        ..ClusterSpec::default()
    })
    .await;
    let cp = &fx.cp;
    let station = cp.station("Browser FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let key = cp.tenant_key("Browser Live").await;
    let (stream, ingest) = cp
        .placed_stream(&key, json!({"name": "Browser Live"}))
        .await;
    let live = stream["slug"].as_str().expect("slug");
    let publish = ingest["publish_url"].as_str().expect("publish url");
    let _publisher = ffmpeg_rtmp(publish, 25);
    let edge_mount = wait_for("the station on the air", Duration::from_secs(20), || {
        cp.redirect(&slug)
    })
    .await;
    let listen = format!("{}/listen/{slug}/radio.mp3", cp.api);
    let watch = format!("{}/watch/{live}.m3u8", cp.api);
    let nowplaying = format!("{}/api/nowplaying/{slug}", cp.api);
    wait_for(
        "the live stream watchable",
        Duration::from_secs(20),
        || async {
            let text = onda_shared::http::get(&watch)
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.matches("#EXTINF").count() >= 2).then_some(())
        },
    )
    .await;
    let page = other_origin_site().await;

    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[
            &script.display().to_string(),
            &page,
            &edge_mount,
            &listen,
            &watch,
            &nowplaying,
            ".",
        ],
    );
    let exit = node.wait_exit(Duration::from_secs(60)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browser ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshots in {})", node.path().display());
    assert_eq!(
        out["origin"],
        page.trim_end_matches('/'),
        "the page's origin: {report}"
    );
    assert!(!cp.api.contains("127.0.0.2") && !edge_mount.contains("127.0.0.2"));
    // 1. A cross-origin fetch asking for ICY metadata: preflight, then the stream and its
    // exposed icy-metaint.
    assert_eq!(out["fetch"]["status"], 200, "fetch: {report}");
    assert_eq!(out["fetch"]["metaint"], "16000", "fetch: {report}");
    assert!(
        out["fetch"]["bytes"].as_u64().unwrap_or(0) >= 16000,
        "fetch: {report}"
    );
    // The same through /listen: the control plane answers the preflight, the redirect is
    // followed with a second preflight at the edge.
    assert_eq!(out["listen_fetch"]["status"], 200, "fetch: {report}");
    assert_eq!(out["listen_fetch"]["metaint"], "16000", "fetch: {report}");
    // 2. <audio crossorigin> through /listen's redirect plays.
    assert_eq!(out["audio"]["outcome"], "playing", "audio: {report}");
    assert!(
        out["audio"]["readyState"].as_u64().unwrap_or(0) >= 2,
        "audio: {report}"
    );
    // 3. hls.js through /watch's redirect loads fragments and plays.
    assert_eq!(out["hls"]["outcome"], "playing", "hls.js: {report}");
    assert!(
        out["hls"]["frags"].as_u64().unwrap_or(0) >= 1,
        "hls.js: {report}"
    );
    assert!(
        !out["hls"]["errors"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("fatal")))),
        "hls.js: {report}"
    );
    // 4. The public now-playing JSON.
    assert_eq!(out["nowplaying"]["status"], 200, "now playing: {report}");
    assert_eq!(
        out["nowplaying"]["station"], "Browser FM",
        "now playing: {report}"
    );
    eprintln!("browser: {out}");
}

/// The durations of the `#EXT-X-PART` lines of each complete segment of a media playlist.
fn parts_per_segment(list: &str) -> Vec<Vec<f64>> {
    let mut segments = Vec::new();
    let mut parts = Vec::new();
    for line in list.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:DURATION=") {
            parts.push(
                rest.split(',')
                    .next()
                    .and_then(|d| d.parse().ok())
                    .expect("part duration"),
            );
        } else if line.starts_with("#EXTINF:") {
            segments.push(std::mem::take(&mut parts));
        }
    }
    segments.retain(|p: &Vec<f64>| !p.is_empty());
    segments
}

/// LL-HLS whose parts do not divide the segment (25 fps, 2 s GOP, 300 ms parts: full parts of
/// 280 ms left each segment a last part of one frame) played by hls.js from another origin: no
/// segment ends in a sliver, and hls.js plays without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_low_latency_hls_whose_parts_do_not_divide_the_segment() {
    let script = browser_dir().join("llhls.mjs");
    let (edge, rtmp) = EdgeNode::start_live(
        "[hls]\nsegment_ms = 2000\npart_ms = 300\nwindow = 6\n\n\
         [[live_streams]]\nname = \"show\"\nkey = \"show-key-0123456789\"\n",
    )
    .await;
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 50);
    let playlist = edge.url("/hls/show/index.m3u8");
    let list = wait_for(
        "two segments with their parts",
        Duration::from_secs(30),
        || async {
            let text = onda_shared::http::get(&playlist)
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (parts_per_segment(&text).len() >= 2).then_some(text)
        },
    )
    .await;
    let page = other_origin_site().await;
    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[&script.display().to_string(), &page, &playlist, "8", "."],
    );
    let exit = node.wait_exit(Duration::from_secs(40)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browser ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshots in {})", node.path().display());
    eprintln!("hls.js: {}", out["play"]);
    let end = onda_shared::http::get(&playlist)
        .await
        .expect("playlist")
        .text()
        .await
        .expect("text");
    for parts in parts_per_segment(&list)
        .into_iter()
        .chain(parts_per_segment(&end))
    {
        let (min, max) = parts
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        assert!(
            max <= 0.300 && min >= max * 0.75,
            "parts of a segment: {parts:?}\n{end}"
        );
    }
    assert!(
        out["play"]["errors"].as_array().is_some_and(Vec::is_empty),
        "{report}"
    );
    assert!(
        out["failed_requests"].as_array().is_some_and(Vec::is_empty),
        "{report}"
    );
    assert!(out["play"]["parts"].as_u64().unwrap_or(0) >= 5, "{report}");
    assert!(
        out["play"]["currentTime"].as_f64().unwrap_or(0.0) >= 3.0,
        "{report}"
    );
}

/// hls.js on another origin plays a station's MP3 mount as audio HLS through the redirector's
/// `.m3u8` URL (302 to the edge, with a session token): the audio's time advances without a
/// fatal error, hls.js reads the ID3 tags (timestamp and title) of the segments, and the title
/// set at the source shows as the playlist's date range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_mount_as_audio_hls_through_the_redirector() {
    let script = browser_dir().join("audiohls.mjs");
    let fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: "browser-hls-admin-token-0123456789",
        nodes: &["web-hls-1"],
        ..ClusterSpec::default()
    })
    .await;
    let cp = &fx.cp;
    let station = cp.station("Browser HLS FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let password = station["source_password"]
        .as_str()
        .expect("source password");
    let url = format!("{}/listen/{slug}/radio.mp3.m3u8", cp.api);
    // The edge's own playlist, under a token of this test's (a session of its own).
    let edge_list = wait_for("the mount's HLS", Duration::from_secs(30), || async {
        let edge = cp.redirect(&slug).await?;
        let list = edge.replace(&format!("/{slug}/"), &format!("/hls-audio/{slug}/"));
        let list = format!("{list}/index.m3u8?s=browser-test");
        let resp = onda_shared::http::get(&list).await.ok()?;
        resp.status().is_success().then_some(list)
    })
    .await;
    // A title, as a source client sets it (the edge takes the station's source password).
    let edge = edge_list.split("/hls-audio/").next().expect("edge base");
    let resp = onda_shared::http::client()
        .get(format!(
            "{edge}/admin/metadata?mount=/{slug}/radio.mp3&mode=updinfo&song=Browser%20Song"
        ))
        .basic_auth("source", Some(password))
        .send()
        .await
        .expect("metadata");
    assert_eq!(resp.status().as_u16(), 200);
    wait_for("the title's segment", Duration::from_secs(30), || async {
        let text = onda_shared::http::get(&edge_list)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("X-TITLE=\"Browser Song\"").then_some(())
    })
    .await;
    let page = other_origin_site().await;
    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[&script.display().to_string(), &page, &url, "10", "."],
    );
    let exit = node.wait_exit(Duration::from_secs(40)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browser ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshot in {})", node.path().display());
    eprintln!("hls.js: {}", out["play"]);
    let play = &out["play"];
    assert!(
        play["url"]
            .as_str()
            .is_some_and(|u| u.contains("/hls-audio/") && u.contains("?s=")),
        "hls.js followed the redirect to the edge: {report}"
    );
    assert!(
        !play["errors"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("fatal")))),
        "{report}"
    );
    assert!(play["frags"].as_u64().unwrap_or(0) >= 2, "{report}");
    assert!(
        play["currentTime"].as_f64().unwrap_or(0.0) >= 4.0,
        "the audio played: {report}"
    );
    let id3: Vec<&str> = play["id3"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        id3.iter()
            .any(|t| t.contains("com.apple.streaming.transportStreamTimestamp")),
        "{report}"
    );
    assert!(id3.iter().any(|t| t.contains("Browser Song")), "{report}");
    assert!(
        play["dateRanges"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.ends_with("=Browser Song")))),
        "{report}"
    );
}

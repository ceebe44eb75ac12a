//! A radio station's public page (`/stations/{slug}`) and its embeddable player
//! (`/embed/{slug}`) in a real browser: Debian's chromium driven by playwright-core
//! (tests/browser/station.mjs). On a one-node cluster whose AutoDJ plays short tracks: the page
//! plays the Icecast mount (`audio.currentTime` advances), its title changes at a track change
//! without a reload while the track before moves into the history, and an embed in a page of
//! another origin plays and shows the cover, in the light and the dark theme, its page, script
//! and styles under 60 KB. On a two-node `onda dev`: the node carrying the demo station is
//! SIGKILLed while the page plays, and the player resumes by itself through the redirector.
//! On the one-node cluster a listener also requests a song on the page: it shows as the next
//! song, then plays, and the same request again is refused with its reason.
//! Also the server side: the root page, a station that does not exist, the embed snippet.
//! Screenshots are kept in the browser process's directory (its path is printed).

use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use onda_tests::process::Proc;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

on_both_backends!(a_listener_plays_and_sees_the_station_page_and_the_embed);

/// Runs tests/browser/station.mjs with `config`; its JSON report (which names the screenshots'
/// directory, `target/tmp/{artifacts}`, kept after the test for people to look at).
async fn browser(config: &Value, artifacts: &str) -> (Value, String) {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join(artifacts);
    std::fs::create_dir_all(&shots).expect("artifacts directory");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/install-deps.sh test"
    );
    assert!(
        onda_tests::web_app_dir().join("station.html").is_file(),
        "the web app is not built: run scripts/build-web.sh (make test does)"
    );
    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[
            &dir.join("station.mjs").display().to_string(),
            &config.to_string(),
            &shots.display().to_string(),
        ],
    );
    let exit = node.wait_exit(Duration::from_secs(240)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browser ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshots in {})", shots.display());
    eprintln!("{report}");
    (out, report)
}

async fn a_listener_plays_and_sees_the_station_page_and_the_embed(b: Backend) {
    let Some((fx, key, sid, slug)) =
        onda_tests::fixture::radio(b, "Pages Inc", "Harbour Radio").await
    else {
        return;
    };
    let cp = &fx.cp;
    let dir = tempfile::tempdir().expect("dir");
    let picture = onda_tests::media::make_png(dir.path(), "cover", 600, 600).await;
    let plain = onda_tests::edge::make_track(dir.path(), "a.mp3", 440, 6, "Pages", "First").await;
    let first = onda_tests::media::with_cover(&plain, &picture, "first.mp3").await;
    let second =
        onda_tests::edge::make_track(dir.path(), "second.mp3", 550, 6, "Pages", "Second").await;
    let third =
        onda_tests::edge::make_track(dir.path(), "third.mp3", 660, 6, "Pages", "Third").await;
    let files = cp.upload_files(&key, &sid, &[first, second, third]).await;
    let ids: Vec<&str> = files
        .iter()
        .map(|f| f["id"].as_str().expect("id"))
        .collect();
    cp.rotation(&key, &sid, "Loop", &ids).await;
    // A fourth track plays only when a listener requests it (song requests on, 60-minute gap).
    let fourth =
        onda_tests::edge::make_track(dir.path(), "fourth.mp3", 770, 6, "Pages", "Fourth").await;
    cp.upload_files(&key, &sid, &[fourth]).await;
    let (s, body) = cp
        .tenant_call(
            &key,
            Method::PATCH,
            &format!("/v1/stations/{sid}"),
            Some(json!({"requests": {"enabled": true, "track_gap_minutes": 60}})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    // Every track shows a picture: its own, or the station's default.
    let logo = onda_tests::media::make_png(dir.path(), "logo", 300, 300).await;
    let (s, body) = cp
        .raw_call(
            &key,
            Method::PUT,
            &format!("/v1/stations/{sid}/art"),
            "image/png",
            std::fs::read(&logo).expect("logo"),
        )
        .await;
    assert_eq!(s, 200, "{body}");

    // Server side: the root names the service and nothing private; an unknown station is a 404
    // page; the snippet writes the embed's URL.
    let http = onda_shared::http::client();
    let root = http.get(format!("{}/", cp.api)).send().await.expect("root");
    assert_eq!(root.status().as_u16(), 200);
    let root = root.text().await.expect("root");
    assert!(
        root.contains("Onda") && root.contains("/openapi.json"),
        "{root}"
    );
    assert!(!root.contains(&slug) && !root.contains(&key), "{root}");
    let missing = http
        .get(format!("{}/stations/no-such-station", cp.api))
        .send()
        .await
        .expect("page");
    assert_eq!(missing.status().as_u16(), 404);
    // The page is there once the control plane's view has the new station.
    let embed = onda_tests::wait_for("the embed page", Duration::from_secs(30), || async {
        let r = http
            .get(format!("{}/embed/{slug}", cp.api))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 200).then_some(r)
    })
    .await;
    assert_eq!(
        embed.headers()["content-security-policy"],
        "frame-ancestors *"
    );
    assert!(embed.headers().get("x-frame-options").is_none());
    assert!(
        embed
            .text()
            .await
            .expect("html")
            .contains("<title>Harbour Radio</title>")
    );
    let (s, snippet) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("/v1/stations/{sid}/embed?theme=dark&accent=e4572e&layout=compact"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{snippet}");
    let url = snippet["url"].as_str().expect("url");
    assert!(
        url.ends_with(&format!(
            "/embed/{slug}?theme=dark&layout=compact&accent=%23e4572e&history=0&requests=0&volume=1&cover=1"
        )),
        "{snippet}"
    );
    assert!(
        snippet["snippet"]
            .as_str()
            .expect("snippet")
            .starts_with("<iframe src=\""),
        "{snippet}"
    );
    for bad in ["theme=blue", "accent=red", "colour=red"] {
        let (s, body) = cp
            .tenant_call(
                &key,
                Method::GET,
                &format!("/v1/stations/{sid}/embed?{bad}"),
                None,
            )
            .await;
        assert!(matches!(s, 400 | 422), "{bad}: {s} {body}");
    }

    // The public JSON carries an ETag: asked again with it (within the same second, as the
    // body's elapsed time moves each second), the answer is 304 without a body.
    let np_url = format!("{}/api/nowplaying/{slug}", cp.api);
    let mut not_modified = 0;
    for _ in 0..5 {
        let r = http.get(&np_url).send().await.expect("np");
        let etag = r.headers()["etag"].clone();
        let again = http
            .get(&np_url)
            .header("if-none-match", etag)
            .send()
            .await
            .expect("np");
        if again.status().as_u16() == 304 {
            not_modified += 1;
        }
    }
    assert!(not_modified > 0, "no 304 in 5 tries");

    let (out, report) = browser(
        &json!({"api": cp.api, "slug": slug, "mode": "page", "request": "Pages - Fourth", "hls": true}),
        &format!("station-pages-{b:?}").to_lowercase(),
    )
    .await;
    let steps = &out["steps"];
    let shown = &steps["page_shows_the_station"];
    assert_eq!(shown["document_title"], "Harbour Radio", "{report}");
    assert_eq!(shown["name"], "Harbour Radio", "{report}");
    assert!(
        shown["art"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("{}/art/", cp.api))),
        "{report}"
    );
    assert!(
        steps["page_plays"]["current_time"].as_f64() > Some(2.0),
        "{report}"
    );
    let change = &steps["title_changes_without_reload"];
    let before = change["before"].as_str().expect(&report);
    assert_ne!(change["after"], before, "{report}");
    assert!(
        change["history"]
            .as_array()
            .expect(&report)
            .iter()
            .any(|h| h.as_str().is_some_and(|h| h.ends_with(before))),
        "{report}"
    );
    assert_eq!(change["navigations"], 1, "no reload: {report}");
    // Shown within 2 s of the track's start (its start is known to the second, hence 3 s).
    assert!(change["lag_ms"].as_i64() < Some(3000), "{report}");
    // The mount's HLS, chosen in the page's source list, plays through hls.js.
    let hls = &steps["hls_plays_through_hls_js"];
    assert_eq!(hls["source"], "64 kbps MP3 (HLS)", "{report}");
    assert!(hls["current_time"].as_f64().is_some(), "{report}");
    // A listener's request: announced as next, then playing; the same again is refused.
    let requested = &steps["request_shows_as_next_and_plays"];
    assert!(requested.is_object(), "{report}");
    assert!(requested.get("error").is_none(), "{report}");
    assert_eq!(
        requested["next"], "Next: Pages - Fourth (requested)",
        "{report}"
    );
    let refused = steps["same_request_inside_the_gap_is_refused"]["refused"]
        .as_str()
        .expect(&report);
    assert_eq!(
        refused, "This track was played or requested in the last 60 minutes; request another one.",
        "{report}"
    );
    for theme in ["light", "dark"] {
        let e = &steps[format!("embed_{theme}_plays_and_shows_the_cover")];
        assert!(e["current_time"].as_f64() > Some(2.0), "{theme}: {report}");
        assert!(e["art_width"].as_u64() > Some(0), "{theme}: {report}");
        assert!(
            e["theme"].as_str().is_some_and(|t| t.contains(theme)),
            "{report}"
        );
        // The embed's page, script and styles, as sent.
        assert!(e["page_bytes"].as_u64() < Some(60 * 1024), "{report}");
    }
    let errors: Vec<&Value> = out["console"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.as_str().is_some_and(|l| l.contains("pageerror")))
        .collect();
    assert!(errors.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_station_page_resumes_by_itself_after_a_failover() {
    let mut dev = Proc::dev(
        2,
        &[(
            "ONDA_DEV_APP_DIR",
            &onda_tests::web_app_dir().display().to_string(),
        )],
    );
    let info = dev
        .wait_json(".onda-dev/dev.json", Duration::from_secs(120))
        .await;
    let api = info["api_url"].as_str().expect("api_url").to_string();
    let page = info["station_page_url"].as_str().expect("station_page_url");
    assert_eq!(
        page,
        format!(
            "{api}/stations/{}",
            info["station_slug"].as_str().expect("slug")
        )
    );
    assert!(
        info["embed_url"]
            .as_str()
            .is_some_and(|u| u.contains("/embed/")),
        "{info}"
    );
    // The node the redirector sends listeners to carries the station.
    let listen = info["listen_url"].as_str().expect("listen_url");
    let client = onda_shared::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let location = onda_tests::wait_for(
        "the demo station on the air",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let r = client.get(listen).send().await.ok()?;
                (r.status().as_u16() == 302).then(|| {
                    r.headers()
                        .get("location")?
                        .to_str()
                        .ok()
                        .map(str::to_string)
                })?
            }
        },
    )
    .await;
    let carrier = info["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| location.starts_with(n["edge_url"].as_str().unwrap_or("-")))
        .expect("the redirect names a dev node");
    let (out, report) = browser(
        &json!({
            "api": api,
            "slug": info["station_slug"],
            "mode": "failover",
            "killPid": carrier["pid"],
        }),
        "station-pages-failover",
    )
    .await;
    let resumed = &out["steps"]["player_resumes_after_the_node_is_killed"];
    assert!(resumed["reconnects"].as_u64() >= Some(1), "{report}");
    assert!(resumed["current_time"].as_f64().is_some(), "{report}");
    dev.terminate();
    dev.wait_exit(Duration::from_secs(20)).await;
}

//! Cover art end to end, on SQLite and on PostgreSQL: an MP3 uploaded with an embedded picture
//! gets both sizes, served by content hash with long cache headers (and 304 for a current copy),
//! and now-playing shows that picture for it; a track without one shows the built-in picture
//! until the tenant uploads the station's default, and then that one.

use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

on_both_backends!(covers_are_extracted_served_and_shown_in_now_playing);

/// The now-playing JSON once `pred` holds for it.
async fn np_until(api: &str, slug: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let url = format!("{api}/api/nowplaying/{slug}");
    wait_for(what, Duration::from_secs(60), || async {
        let np: Value = onda_shared::http::get(&url).await.ok()?.json().await.ok()?;
        pred(&np).then_some(np)
    })
    .await
}

/// The art URL now-playing shows for the song titled `title` (playing or in the history).
fn art_of(np: &Value, title: &str) -> Option<String> {
    std::iter::once(&np["now_playing"]["song"])
        .chain(np["song_history"].as_array()?.iter().map(|h| &h["song"]))
        .find(|s| s["title"] == title)
        .and_then(|s| s["art"].as_str())
        .map(str::to_string)
}

async fn covers_are_extracted_served_and_shown_in_now_playing(b: Backend) {
    let Some((fx, key, sid, slug)) = onda_tests::fixture::radio(b, "Covers Inc", "Cover FM").await
    else {
        return;
    };
    let cp = &fx.cp;
    let dir = tempfile::tempdir().expect("dir");
    let picture = onda_tests::media::make_png(dir.path(), "cover", 800, 600).await;
    let plain = onda_tests::edge::make_track(dir.path(), "a.mp3", 440, 3, "Art", "Covered").await;
    let covered = onda_tests::media::with_cover(&plain, &picture, "covered.mp3").await;
    let bare = onda_tests::edge::make_track(dir.path(), "bare.mp3", 660, 3, "Art", "Bare").await;
    let files = cp.upload_files(&key, &sid, &[covered, bare]).await;
    let art = files[0]["art_sha256"]
        .as_str()
        .expect("a cover")
        .to_string();
    assert_eq!(art.len(), 64, "{}", files[0]);
    assert!(files[1]["art_sha256"].is_null(), "{}", files[1]);
    let ids: Vec<&str> = files
        .iter()
        .map(|f| f["id"].as_str().expect("id"))
        .collect();
    cp.rotation(&key, &sid, "Loop", &ids).await;

    // Served by hash: both sizes, cacheable for good, 304 for a current copy.
    let http = onda_shared::http::client();
    let large = http
        .get(format!("{}/art/{art}/500.jpg", cp.api))
        .send()
        .await
        .expect("art");
    assert_eq!(large.status().as_u16(), 200);
    assert_eq!(large.headers()["content-type"], "image/jpeg");
    assert_eq!(
        large.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = large.headers()["etag"].clone();
    let jpeg = large.bytes().await.expect("bytes");
    assert!(
        jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.len() > 1000,
        "{}",
        jpeg.len()
    );
    let again = http
        .get(format!("{}/art/{art}/500.jpg", cp.api))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("art");
    assert_eq!(again.status().as_u16(), 304);
    for (path, status) in [
        (format!("/art/{art}/100.jpg"), 200),
        (format!("/art/{art}/300.jpg"), 404),
        ("/art/not-a-hash/500.jpg".to_string(), 404),
        (format!("/art/{}/500.jpg", "0".repeat(64)), 404),
        ("/art/default.svg".to_string(), 200),
    ] {
        let r = http
            .get(format!("{}{path}", cp.api))
            .send()
            .await
            .expect("art");
        assert_eq!(r.status().as_u16(), status, "{path}");
    }

    // Now playing: the covered track with its picture, the bare one with the built-in one.
    let covered_url = format!("{}/art/{art}/500.jpg", cp.api);
    let default_url = format!("{}/art/default.svg", cp.api);
    np_until(&cp.api, &slug, "both tracks played", |np| {
        art_of(np, "Covered").as_deref() == Some(&covered_url)
            && art_of(np, "Bare").as_deref() == Some(&default_url)
    })
    .await;

    // The station's default: refused when not a picture, then shown for the bare track.
    let (s, body) = cp
        .raw_call(
            &key,
            Method::PUT,
            &format!("/v1/stations/{sid}/art"),
            "text/plain",
            b"hi".to_vec(),
        )
        .await;
    assert_eq!(s, 415, "{body}");
    let (s, body) = cp
        .raw_call(
            &key,
            Method::PUT,
            &format!("/v1/stations/{sid}/art"),
            "image/png",
            b"no png".to_vec(),
        )
        .await;
    assert_eq!(s, 422, "{body}");
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
    let station_art = body["art_sha256"].as_str().expect("hash").to_string();
    assert_eq!(body["url"], format!("/art/{station_art}/500.jpg"));
    let station_url = format!("{}/art/{station_art}/500.jpg", cp.api);
    np_until(
        &cp.api,
        &slug,
        "the bare track with the station's picture",
        |np| {
            art_of(np, "Bare").as_deref() == Some(&station_url)
                && art_of(np, "Covered").as_deref() == Some(&covered_url)
        },
    )
    .await;
    let r = http.get(&station_url).send().await.expect("art");
    assert_eq!(r.status().as_u16(), 200);

    // Another tenant cannot set it.
    let other = cp.tenant_key("Other Inc").await;
    let (s, _) = cp
        .raw_call(
            &other,
            Method::PUT,
            &format!("/v1/stations/{sid}/art"),
            "image/png",
            std::fs::read(&logo).expect("logo"),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = cp
        .raw_call(
            &key,
            Method::DELETE,
            &format!("/v1/stations/{sid}/art"),
            "image/png",
            Vec::new(),
        )
        .await;
    assert_eq!(s, 204);
}

//! The media library through the panel API with real files made by ffmpeg: every test runs once
//! on SQLite and once on PostgreSQL, and looks at the media store's directory to check that what
//! is refused leaves nothing behind and that content is stored once.

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::media::{
    Kind, Tags, blob_path, files_under, make_silence, make_track, upload, upload_chunked,
};
use onda_tests::on_both_backends;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::path::Path;

on_both_backends!(
    mp3_aac_flac_are_stored_with_tags_once_per_content,
    bad_uploads_are_refused_and_leave_nothing,
    storage_quota_is_enforced_and_freed_by_delete,
    search_edit_and_pagination,
    other_tenants_admin_and_plans_without_autodj,
    deleting_a_station_frees_its_media,
    long_audio_is_refused_early_and_renditions_count_in_storage,
);

const SECONDS: f64 = 4.0;

async fn station(cp: &TestControlPlane, key: &str, name: &str) -> String {
    cp.post(
        "/v1/stations",
        key,
        json!({"name": name, "mounts": [{"path": "/a.mp3", "format": "mp3", "bitrate_kbps": 64}]}),
    )
    .await
    .expect(201)
    .body["id"]
        .as_str()
        .expect("station id")
        .to_string()
}

fn tags<'a>(artist: &'a str, title: &'a str, album: &'a str) -> Tags<'a> {
    Tags {
        artist,
        title,
        album,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Blobs in the store (uploads in progress excluded: there must be none between requests).
fn stored(media_dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(media_dir)
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// A plan like Premium with `storage_bytes` and the AutoDJ switched as asked.
async fn plan(cp: &TestControlPlane, name: &str, storage_bytes: u64, autodj: bool) -> String {
    let body = json!({
        "name": name,
        "limits": {"max_stations": 5, "max_mounts_per_station": 3, "allowed_formats": ["mp3"],
                   "max_bitrate_kbps": 320, "max_listeners_per_station": 100,
                   "storage_bytes": storage_bytes, "max_live_streams": 0},
        "features": {"autodj": autodj},
        "prices": {"currency": "USD", "monthly_micros": 1, "overage_per_gb_micros": 0,
                   "overage_per_listener_hour_micros": 0}
    });
    id(&cp.post("/v1/plans", &cp.admin, body).await.expect(201).body)
}

async fn mp3_aac_flac_are_stored_with_tags_once_per_content(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Library", "plan_premium").await;
    let sid = station(&cp, &key, "Library FM").await;

    let mut ids = Vec::new();
    for (i, kind) in [Kind::Mp3, Kind::M4a, Kind::Flac].into_iter().enumerate() {
        let title = format!("Song {i}");
        let t = tags("Nina Simöne", &title, "Pastel Blues");
        let hz = 300 + 100 * u32::try_from(i).expect("small");
        let path = make_track(dir.path(), &format!("song{i}"), kind, SECONDS, hz, &t).await;
        let bytes = std::fs::read(&path).expect("read track");
        let filename = format!("song{i}.{}", kind.extension());
        let m = upload(&cp, &key, &sid, &filename, bytes.clone())
            .await
            .expect(201)
            .body;
        assert_eq!(m["artist"], "Nina Simöne", "{m}");
        assert_eq!(m["title"], format!("Song {i}"), "{m}");
        assert_eq!(m["album"], "Pastel Blues", "{m}");
        assert_eq!(m["filename"], filename);
        assert_eq!(m["codec"], kind.codec(), "{m}");
        assert_eq!(m["station_id"], sid.as_str());
        assert_eq!(m["size_bytes"], bytes.len());
        assert!(m["bitrate_kbps"].as_u64().is_some_and(|k| k > 0), "{m}");
        let ms = m["duration_ms"].as_f64().expect("duration");
        assert!(
            (ms / 1000.0 - SECONDS).abs() <= 0.2,
            "{kind:?} lasts {ms} ms, made {SECONDS} s"
        );
        let sha = sha256_hex(&bytes);
        assert_eq!(m["sha256"], sha.as_str());
        let blob = blob_path(&cp.media_dir, &sha);
        assert_eq!(
            std::fs::read(&blob).expect("blob stored"),
            bytes,
            "the blob holds exactly the upload"
        );
        assert_eq!(
            cp.get(&format!("/v1/stations/{sid}/media/{}", id(&m)), &key)
                .await
                .expect(200)
                .body,
            m
        );

        // The same content again, under another name: the existing file, nothing new.
        let again = upload(&cp, &key, &sid, "copy.bin", bytes.clone())
            .await
            .expect(200)
            .body;
        assert_eq!(again, m);
        ids.push((id(&m), sha, bytes));
    }
    assert_eq!(stored(&cp.media_dir).len(), 3, "one blob per content");
    assert_eq!(
        cp.list_all(&format!("/v1/stations/{sid}/media"), &key)
            .await
            .len(),
        3
    );

    // Another station of the tenant and another tenant hold the same MP3: new rows, same blob.
    let (mp3_id, mp3_sha, mp3) = ids[0].clone();
    let sid2 = station(&cp, &key, "Library 2").await;
    let second = upload(&cp, &key, &sid2, "song0.mp3", mp3.clone())
        .await
        .expect(201)
        .body;
    assert_ne!(id(&second), mp3_id);
    let (_, other_key) = cp.tenant_with_key("Other", "plan_premium").await;
    let other_sid = station(&cp, &other_key, "Other FM").await;
    let third = upload(&cp, &other_key, &other_sid, "mine.mp3", mp3.clone())
        .await
        .expect(201)
        .body;
    assert_eq!(stored(&cp.media_dir).len(), 3, "still stored once");

    // The blob stays while any station holds it, and goes with the last one.
    cp.delete(&format!("/v1/stations/{sid}/media/{mp3_id}"), &key)
        .await
        .expect(204);
    cp.get(&format!("/v1/stations/{sid}/media/{mp3_id}"), &key)
        .await
        .problem(404);
    cp.delete(&format!("/v1/stations/{sid}/media/{mp3_id}"), &key)
        .await
        .problem(404);
    cp.delete(&format!("/v1/stations/{sid2}/media/{}", id(&second)), &key)
        .await
        .expect(204);
    assert!(blob_path(&cp.media_dir, &mp3_sha).is_file());
    cp.delete(
        &format!("/v1/stations/{other_sid}/media/{}", id(&third)),
        &other_key,
    )
    .await
    .expect(204);
    assert!(
        !blob_path(&cp.media_dir, &mp3_sha).exists(),
        "unreferenced blob removed"
    );
    assert_eq!(stored(&cp.media_dir).len(), 2);
    cp.stop().await;
}

async fn bad_uploads_are_refused_and_leave_nothing(b: Backend) {
    // A small max_upload_bytes, so that a real file can be too large.
    let max_upload = 96 * 1024;
    let Some(cp) =
        TestControlPlane::start_with(b, |cfg| cfg.media.max_upload_bytes = max_upload).await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Bad", "plan_premium").await;
    let sid = station(&cp, &key, "Bad FM").await;
    let list = format!("/v1/stations/{sid}/media");
    let nothing_left = |what: &str| {
        let files = stored(&cp.media_dir);
        assert!(files.is_empty(), "{what} left {files:?}");
    };

    // A text file named .mp3.
    let text = "This is not a song, only words in a file.\n"
        .repeat(50)
        .into_bytes();
    let r = upload(&cp, &key, &sid, "song.mp3", text).await.problem(422);
    assert!(r.text.contains("not audio"), "{}", r.text);
    nothing_left("a text file");
    // Nothing at all.
    upload(&cp, &key, &sid, "empty.mp3", Vec::new())
        .await
        .problem(422);
    nothing_left("an empty file");

    // An MP3 cut in half: its Xing header still declares the whole length.
    let t = tags("Cut", "Half", "Broken");
    let whole = std::fs::read(make_track(dir.path(), "whole", Kind::Mp3, SECONDS, 440, &t).await)
        .expect("read");
    assert!(
        whole.len() as u64 <= max_upload,
        "the test file fits the limit"
    );
    let half = whole[..whole.len() / 2].to_vec();
    let r = upload(&cp, &key, &sid, "half.mp3", half).await.problem(422);
    assert!(r.text.contains("truncated"), "{}", r.text);
    nothing_left("a truncated MP3");
    // A FLAC cut in half, too (STREAMINFO declares the length).
    let flac =
        std::fs::read(make_track(dir.path(), "f", Kind::Flac, 3.0, 440, &t).await).expect("read");
    let r = upload(
        &cp,
        &key,
        &sid,
        "half.flac",
        flac[..flac.len() / 2].to_vec(),
    )
    .await
    .problem(422);
    assert!(r.text.contains("truncated"), "{}", r.text);
    nothing_left("a truncated FLAC");
    // A FLAC of the full length with its middle overwritten: damage inside, not at the end.
    let mut damaged = flac.clone();
    let (from, to) = (damaged.len() / 4, damaged.len() * 3 / 4);
    for (i, b) in damaged[from..to].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let r = upload(&cp, &key, &sid, "damaged.flac", damaged)
        .await
        .problem(422);
    assert!(
        r.text.contains("damaged") || r.text.contains("truncated") || r.text.contains("corrupt"),
        "{}",
        r.text
    );
    nothing_left("a FLAC damaged inside");

    // Larger than media.max_upload_bytes: refused from Content-Length, and while streaming when
    // the size is not announced (chunked).
    let long = std::fs::read(make_track(dir.path(), "long", Kind::Mp3, 12.0, 440, &t).await)
        .expect("read");
    assert!(long.len() as u64 > max_upload);
    let r = upload(&cp, &key, &sid, "long.mp3", long.clone())
        .await
        .problem(413);
    assert!(r.text.contains("max_upload_bytes"), "{}", r.text);
    nothing_left("a too large upload");
    let (status, body) = upload_chunked(&cp, &key, &sid, "long.mp3", &long).await;
    assert_eq!(status, 413, "{body}");
    nothing_left("a too large chunked upload");
    // A chunked upload within the limit is stored.
    let (status, body) = upload_chunked(&cp, &key, &sid, "whole.mp3", &whole).await;
    assert_eq!(status, 201, "{body}");
    let ok = cp.list_all(&list, &key).await;
    assert_eq!(ok.len(), 1);
    cp.delete(&format!("{list}/{}", id(&ok[0])), &key)
        .await
        .expect(204);
    nothing_left("a deleted file");

    // No file name.
    cp.raw(
        reqwest::Method::POST,
        &list,
        &key,
        Some("audio/mpeg"),
        whole.clone(),
    )
    .await
    .problem(400);
    nothing_left("an upload without a name");
    assert!(cp.list_all(&list, &key).await.is_empty(), "no row");
    cp.stop().await;
}

async fn storage_quota_is_enforced_and_freed_by_delete(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let t = tags("Quota", "Q", "Q");
    let a = std::fs::read(make_track(dir.path(), "a", Kind::Mp3, SECONDS, 330, &t).await)
        .expect("read");
    let bb = std::fs::read(make_track(dir.path(), "b", Kind::Mp3, SECONDS, 550, &t).await)
        .expect("read");
    // Room for either file, not both (each with its renditions: 4 s at 64 kbps, 32,000 bytes).
    let quota = a.len().max(bb.len()) + a.len().min(bb.len()) / 2 + 33_000;
    let plan = plan(&cp, "Tiny", quota as u64, true).await;
    let (_, key) = cp.tenant_with_key("Tight", &plan).await;
    let sid = station(&cp, &key, "Tight FM").await;
    let first = upload(&cp, &key, &sid, "a.mp3", a.clone())
        .await
        .expect(201)
        .body;
    let r = upload(&cp, &key, &sid, "b.mp3", bb.clone())
        .await
        .problem(413);
    assert_eq!(r.body["limit"], "storage_bytes", "{}", r.text);
    assert!(r.text.contains("storage"), "{}", r.text);
    assert_eq!(
        stored(&cp.media_dir).len(),
        1,
        "the refused file is not stored"
    );
    assert_eq!(
        cp.list_all(&format!("/v1/stations/{sid}/media"), &key)
            .await
            .len(),
        1
    );
    // The quota is the tenant's: a second station does not bring more room.
    let sid2 = station(&cp, &key, "Tight 2").await;
    upload(&cp, &key, &sid2, "b.mp3", bb.clone())
        .await
        .problem(413);
    // The same content again is not a new file, so it is no quota matter.
    upload(&cp, &key, &sid, "a.mp3", a.clone())
        .await
        .expect(200);

    cp.delete(&format!("/v1/stations/{sid}/media/{}", id(&first)), &key)
        .await
        .expect(204);
    let bb_again = bb.clone();
    let b_file = upload(&cp, &key, &sid, "b.mp3", bb).await.expect(201).body;
    assert_eq!(stored(&cp.media_dir).len(), 1, "a's blob went with its row");

    // Two uploads at once that fit only one at a time: both pass the first look, and the
    // decision under the tenant's lock lets exactly one in.
    cp.delete(&format!("/v1/stations/{sid}/media/{}", id(&b_file)), &key)
        .await
        .expect(204);
    let (ra, rb) = tokio::join!(
        upload(&cp, &key, &sid, "a.mp3", a.clone()),
        upload(&cp, &key, &sid2, "b.mp3", bb_again.clone()),
    );
    let mut codes = [ra.status.as_u16(), rb.status.as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [201, 413], "{} / {}", ra.text, rb.text);
    assert_eq!(stored(&cp.media_dir).len(), 1);
    cp.stop().await;
}

async fn search_edit_and_pagination(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Search", "plan_premium").await;
    let sid = station(&cp, &key, "Search FM").await;
    let list = format!("/v1/stations/{sid}/media");
    let tracks = [
        ("Björk", "Jóga", "Homogenic", "bjork-joga.mp3"),
        ("Massive Attack", "Teardrop", "Mezzanine", "teardrop.mp3"),
        ("Portishead", "Roads", "Dummy", "100%_roads.mp3"),
    ];
    for (i, (artist, title, album, name)) in tracks.iter().enumerate() {
        let hz = 200 + 50 * u32::try_from(i).expect("small");
        let path = make_track(
            dir.path(),
            &format!("t{i}"),
            Kind::Mp3,
            1.0,
            hz,
            &tags(artist, title, album),
        )
        .await;
        upload(&cp, &key, &sid, name, std::fs::read(path).expect("read"))
            .await
            .expect(201);
    }
    let search = |q: &str| {
        let url = format!("{list}?q={q}");
        let cp = &cp;
        let key = &key;
        async move {
            let mut titles: Vec<String> = cp
                .list_all(&url, key)
                .await
                .iter()
                .map(|m| m["title"].as_str().unwrap_or_default().to_string())
                .collect();
            titles.sort();
            titles
        }
    };
    assert_eq!(search("massive").await, ["Teardrop"], "artist, any case");
    assert_eq!(
        search("BJ%C3%96RK").await,
        ["Jóga"],
        "non-ASCII case folded"
    );
    assert_eq!(search("dummy").await, ["Roads"], "album");
    assert_eq!(search("bjork-").await, ["Jóga"], "file name");
    assert_eq!(
        search("100%25_").await,
        ["Roads"],
        "wildcards taken literally"
    );
    assert!(search("%25").await.len() == 1, "only the name with a %");
    assert!(
        search("_").await.len() == 1,
        "only the name with an underscore"
    );
    assert!(search("nothing-like-this").await.is_empty());
    assert_eq!(search("").await.len(), 3);

    // Pages.
    let first = cp
        .get(&format!("{list}?limit=2"), &key)
        .await
        .expect(200)
        .body;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = cp
        .get(&format!("{list}?limit=2&cursor={cursor}"), &key)
        .await
        .expect(200)
        .body;
    assert_eq!(second["items"].as_array().map(Vec::len), Some(1));
    assert!(second["next_cursor"].is_null());
    cp.get(&format!("{list}?limit=0"), &key).await.problem(400);
    cp.get(&format!("{list}?sort=title"), &key)
        .await
        .problem(400);

    // Edit tags.
    let m = cp.list_all(&format!("{list}?q=teardrop"), &key).await[0].clone();
    let url = format!("{list}/{}", id(&m));
    let edited = cp
        .patch(
            &url,
            &key,
            json!({"title": "  Teardrop (Live) ", "album": ""}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(edited["title"], "Teardrop (Live)");
    assert_eq!(edited["album"], "");
    assert_eq!(edited["artist"], "Massive Attack", "absent fields stay");
    assert_eq!(edited["sha256"], m["sha256"]);
    assert_eq!(
        search("live").await,
        ["Teardrop (Live)"],
        "search follows edits"
    );
    assert!(search("mezzanine").await.is_empty());
    cp.patch(&url, &key, json!({"genre": "trip hop"}))
        .await
        .problem(422);
    cp.patch(&url, &key, json!({"title": 5})).await.problem(422);
    cp.patch(&url, &key, json!({"artist": "a\u{0}b"}))
        .await
        .problem(422);
    assert_eq!(
        cp.patch(&url, &key, json!({})).await.expect(200).body["title"],
        "Teardrop (Live)"
    );
    cp.patch(&format!("{list}/med_nope"), &key, json!({"title": "x"}))
        .await
        .problem(404);
    cp.stop().await;
}

async fn other_tenants_admin_and_plans_without_autodj(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (tid_a, key_a) = cp.tenant_with_key("Alpha", "plan_premium").await;
    let (_, key_b) = cp.tenant_with_key("Beta", "plan_premium").await;
    let sid = station(&cp, &key_a, "Alpha FM").await;
    let bytes =
        std::fs::read(make_track(dir.path(), "a", Kind::Mp3, 1.0, 440, &tags("A", "B", "C")).await)
            .expect("read");
    let m = upload(&cp, &key_a, &sid, "a.mp3", bytes.clone())
        .await
        .expect(201)
        .body;
    let list = format!("/v1/stations/{sid}/media");
    let one = format!("{list}/{}", id(&m));

    // Another tenant: A's station and file do not exist.
    cp.get(&list, &key_b).await.problem(404);
    cp.get(&one, &key_b).await.problem(404);
    cp.patch(&one, &key_b, json!({"title": "mine"}))
        .await
        .problem(404);
    cp.delete(&one, &key_b).await.problem(404);
    upload(&cp, &key_b, &sid, "x.mp3", bytes.clone())
        .await
        .problem(404);
    assert_eq!(cp.get(&one, &key_a).await.expect(200).body, m, "untouched");
    assert_eq!(stored(&cp.media_dir).len(), 1);

    // The admin reads every library but uploads and edits nothing (media belong to tenants).
    assert_eq!(cp.get(&one, &cp.admin).await.expect(200).body, m);
    assert_eq!(cp.list_all(&list, &cp.admin).await.len(), 1);
    upload(&cp, &cp.admin, &sid, "x.mp3", bytes.clone())
        .await
        .problem(403);
    cp.patch(&one, &cp.admin, json!({"title": "x"}))
        .await
        .problem(403);

    // A suspended tenant reads but cannot upload.
    cp.post(
        &format!("/v1/tenants/{tid_a}/suspend"),
        &cp.admin,
        json!({}),
    )
    .await
    .expect(200);
    cp.get(&one, &key_a).await.expect(200);
    upload(&cp, &key_a, &sid, "b.mp3", bytes.clone())
        .await
        .problem(403);
    cp.post(&format!("/v1/tenants/{tid_a}/resume"), &cp.admin, json!({}))
        .await
        .expect(200);

    // A plan without the AutoDJ has no media library.
    let plan = plan(&cp, "No DJ", 1_000_000_000, false).await;
    let (_, key_c) = cp.tenant_with_key("Gamma", &plan).await;
    let sid_c = station(&cp, &key_c, "Gamma FM").await;
    let r = upload(&cp, &key_c, &sid_c, "a.mp3", bytes)
        .await
        .problem(403);
    assert_eq!(r.body["limit"], "features.autodj", "{}", r.text);
    assert_eq!(stored(&cp.media_dir).len(), 1);

    // No token at all.
    cp.call(reqwest::Method::GET, &list, None, None)
        .await
        .problem(401);
    cp.stop().await;
}

async fn deleting_a_station_frees_its_media(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Gone", "plan_premium").await;
    let sid = station(&cp, &key, "Gone FM").await;
    let keep = station(&cp, &key, "Kept FM").await;
    let shared =
        std::fs::read(make_track(dir.path(), "s", Kind::Mp3, 1.0, 440, &tags("S", "S", "S")).await)
            .expect("read");
    let own = std::fs::read(
        make_track(dir.path(), "o", Kind::Flac, 1.0, 660, &tags("O", "O", "O")).await,
    )
    .expect("read");
    upload(&cp, &key, &sid, "s.mp3", shared.clone())
        .await
        .expect(201);
    upload(&cp, &key, &sid, "o.flac", own.clone())
        .await
        .expect(201);
    upload(&cp, &key, &keep, "s.mp3", shared.clone())
        .await
        .expect(201);
    assert_eq!(stored(&cp.media_dir).len(), 2);
    cp.delete(&format!("/v1/stations/{sid}"), &key)
        .await
        .expect(204);
    assert_eq!(
        stored(&cp.media_dir),
        vec![blob_path(&cp.media_dir, &sha256_hex(&shared))],
        "only the blob another station holds stays"
    );
    assert_eq!(
        cp.list_all(&format!("/v1/stations/{keep}/media"), &key)
            .await
            .len(),
        1
    );
    cp.stop().await;
}

/// The tenant's storage as `/v1/me` reports it.
async fn storage(cp: &TestControlPlane, key: &str) -> Value {
    cp.get("/v1/me", key).await.expect(200).body["storage"].clone()
}

async fn long_audio_is_refused_early_and_renditions_count_in_storage(b: Backend) {
    let Some(cp) = TestControlPlane::start_with(b, |c| {
        c.media.max_duration = std::time::Duration::from_secs(60);
    })
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let plan_id = plan(&cp, "Roomy", 10_000_000, true).await;
    let (_, key) = cp.tenant_with_key("Long Air", &plan_id).await;
    // Two renditions: 64 and 128 kbps (the second 128 kbps mount shares its rendition).
    let sid = id(&cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "Long Air FM", "mounts": [
                {"path": "/lo.mp3", "format": "mp3", "bitrate_kbps": 64},
                {"path": "/hi.mp3", "format": "mp3", "bitrate_kbps": 128},
                {"path": "/hi2.mp3", "format": "mp3", "bitrate_kbps": 128}]}),
        )
        .await
        .expect(201)
        .body);

    // 4 h of silence in 3.7 MB: refused for its length, naming the limit, nothing stored.
    let hours = make_silence(dir.path(), "four-hours", 240, true).await;
    let bytes = std::fs::read(&hours).expect("read");
    assert!(bytes.len() < 8_000_000, "{} bytes", bytes.len());
    let r = upload(&cp, &key, &sid, "four-hours.opus", bytes)
        .await
        .problem(422);
    assert!(r.text.contains("media.max_duration_secs"), "{}", r.text);
    assert!(r.text.contains("1 min"), "{}", r.text);
    // A stream that declares no length: the decode stops just past the limit.
    let stream = make_silence(dir.path(), "undeclared", 10, false).await;
    let started = std::time::Instant::now();
    let r = upload(
        &cp,
        &key,
        &sid,
        "undeclared.mka",
        std::fs::read(&stream).expect("read"),
    )
    .await
    .problem(422);
    assert!(r.text.contains("media.max_duration_secs"), "{}", r.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        stored(&cp.media_dir).is_empty(),
        "nothing of refused uploads"
    );
    assert_eq!(storage(&cp, &key).await["used_bytes"], 0);

    // An accepted file is charged for its renditions: its playing time at 64 + 128 kbps.
    let t = tags("Long", "Air", "Tests");
    let track = std::fs::read(make_track(dir.path(), "t", Kind::Mp3, SECONDS, 440, &t).await)
        .expect("read");
    let m = upload(&cp, &key, &sid, "t.mp3", track.clone())
        .await
        .expect(201)
        .body;
    let ms = m["duration_ms"].as_u64().expect("duration");
    let renditions = ms * 192 / 8;
    assert_eq!(m["rendition_bytes"], renditions, "{m}");
    let used = storage(&cp, &key).await;
    assert_eq!(used["media_bytes"], track.len(), "{used}");
    assert_eq!(used["rendition_bytes"], renditions, "{used}");
    assert_eq!(
        used["used_bytes"],
        track.len() as u64 + renditions,
        "{used}"
    );
    assert_eq!(used["limit_bytes"], 10_000_000, "{used}");

    // Mounts change: the estimate follows them.
    cp.patch(
        &format!("/v1/stations/{sid}"),
        &key,
        json!({"mounts": [{"path": "/hi.mp3", "format": "mp3", "bitrate_kbps": 320}]}),
    )
    .await
    .expect(200);
    assert_eq!(
        storage(&cp, &key).await["rendition_bytes"],
        ms * 320 / 8,
        "renditions re-estimated for the new mounts"
    );

    // A plan with room for the file and its renditions at 64 kbps, not at 64 + 128 kbps.
    let tight = plan(&cp, "Bytes Only", track.len() as u64 + ms * 64 / 8, true).await;
    let (_, key2) = cp.tenant_with_key("Tight Air", &tight).await;
    let two_mounts = json!([{"path": "/a.mp3", "format": "mp3", "bitrate_kbps": 64},
                            {"path": "/b.mp3", "format": "mp3", "bitrate_kbps": 128}]);
    let sid2 = id(&cp
        .post(
            "/v1/stations",
            &key2,
            json!({"name": "Tight Air FM", "mounts": two_mounts}),
        )
        .await
        .expect(201)
        .body);
    let r = upload(&cp, &key2, &sid2, "t.mp3", track.clone())
        .await
        .problem(413);
    assert_eq!(r.body["limit"], "storage_bytes", "{}", r.text);
    assert!(r.text.contains("renditions"), "{}", r.text);
    assert!(
        stored(&cp.media_dir).len() == 1,
        "only the first tenant's file"
    );
    let one_mount = json!([{"path": "/a.mp3", "format": "mp3", "bitrate_kbps": 64}]);
    cp.patch(
        &format!("/v1/stations/{sid2}"),
        &key2,
        json!({ "mounts": one_mount }),
    )
    .await
    .expect(200);
    let fits = upload(&cp, &key2, &sid2, "t.mp3", track.clone())
        .await
        .expect(201)
        .body;
    assert_eq!(fits["rendition_bytes"], ms * 64 / 8);
    // More mounts would make renditions the plan has no room for.
    let r = cp
        .patch(
            &format!("/v1/stations/{sid2}"),
            &key2,
            json!({ "mounts": two_mounts }),
        )
        .await
        .problem(413);
    assert_eq!(r.body["limit"], "storage_bytes", "{}", r.text);
    assert!(r.text.contains("renditions"), "{}", r.text);
    assert_eq!(
        storage(&cp, &key2).await["rendition_bytes"],
        ms * 64 / 8,
        "the refused change left the estimate alone"
    );
    cp.stop().await;
}

/// The control plane's value of a Prometheus series (0 when absent).
async fn metric(cp: &TestControlPlane, name: &str) -> f64 {
    let text = cp
        .http
        .get(format!("{}/metrics", cp.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The reply and when it came.
async fn timed(
    reply: impl std::future::Future<Output = onda_tests::api::Reply>,
) -> (onda_tests::api::Reply, std::time::Instant) {
    let r = reply.await;
    (r, std::time::Instant::now())
}

/// One tenant's two slow uploads (long files to decode) with two probe slots: they take one
/// slot between them, and another tenant's upload goes through the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_slow_probes_leave_a_slot_for_another_tenant() {
    let cp = TestControlPlane::start_with(Backend::Sqlite, |c| {
        c.media.probe_slots = 2;
        c.media.probe_slots_per_tenant = 1;
    })
    .await
    .expect("SQLite is always there");
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, slow) = cp.tenant_with_key("Slow Uploads", "plan_premium").await;
    let (_, quick) = cp.tenant_with_key("Quick Upload", "plan_premium").await;
    let slow_sid = station(&cp, &slow, "Slow FM").await;
    let quick_sid = station(&cp, &quick, "Quick FM").await;
    let long1 = std::fs::read(make_silence(dir.path(), "long1", 150, true).await).expect("read");
    let long2 = std::fs::read(make_silence(dir.path(), "long2", 149, true).await).expect("read");
    let short = std::fs::read(
        make_track(
            dir.path(),
            "short",
            Kind::Mp3,
            SECONDS,
            500,
            &tags("Q", "Q", "Q"),
        )
        .await,
    )
    .expect("read");

    let slow_uploads = async {
        tokio::join!(
            timed(upload(&cp, &slow, &slow_sid, "long1.opus", long1)),
            timed(upload(&cp, &slow, &slow_sid, "long2.opus", long2)),
        )
    };
    let quick_upload = async {
        // Both slow uploads received and at the probe (running or waiting for a slot).
        onda_tests::wait_for(
            "the slow uploads at the probe",
            std::time::Duration::from_secs(60),
            || async {
                let running = metric(&cp, "onda_media_probes_running").await;
                let waiting = metric(&cp, "onda_media_probes_waiting").await;
                (running >= 1.0 && running + waiting >= 2.0).then_some(())
            },
        )
        .await;
        timed(Box::pin(upload(
            &cp,
            &quick,
            &quick_sid,
            "short.mp3",
            short,
        )))
        .await
    };
    let (((r1, t1), (r2, t2)), (rq, tq)) = tokio::join!(slow_uploads, quick_upload);
    r1.expect(201);
    r2.expect(201);
    rq.expect(201);
    assert!(
        tq < t1 && tq < t2,
        "the quick tenant's upload waited for the slow tenant's probes"
    );
    cp.stop().await;
}

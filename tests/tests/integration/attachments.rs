//! Message attachments, on SQLite and PostgreSQL: real images, audio and video made by ffmpeg
//! uploaded through `POST /v1/me/attachments`, checked (dimensions, duration; content that is
//! not what its type says refused), bounded by the plan's `attachment_bytes` also when no length is
//! announced, sent with `send-message` over the gateway (`socket.io-client`), served at their
//! capability URL to `<img>`-like clients without a token, and kept to their uploader's tenant;
//! counted in the tenant's `storage_bytes`; removed when no message carried them within the
//! grace period (also when a send races the sweep); absolute on `http.public_url` when set.

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::media::{self, Kind, Tags};
use onda_tests::on_both_backends;
use onda_tests::realtime::Sio;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::time::Duration;

on_both_backends!(
    uploads_are_checked_served_and_sent,
    the_plan_bounds_attachments,
    attachments_count_against_the_plans_storage,
    unsent_attachments_are_swept_after_the_grace,
    the_sweep_and_a_send_never_both_win,
    a_public_url_makes_attachment_urls_absolute,
);

const UPLOAD: &str = "/v1/me/attachments";

async fn upload(cp: &TestControlPlane, token: &str, content_type: &str, bytes: Vec<u8>) -> Value {
    cp.raw(Method::POST, UPLOAD, token, Some(content_type), bytes)
        .await
        .expect(201)
        .body
}

/// A GET of an attachment's URL with no token, and optionally a Range.
async fn fetch(cp: &TestControlPlane, url: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = onda_shared::http::client().get(format!("{}{url}", cp.url));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.expect("request sent")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn assert_error(ack: &Value, code: &str) {
    assert_eq!(ack["error"]["code"], code, "{ack}");
    let message = ack["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(' '), "a sentence: {ack}");
}

async fn uploads_are_checked_served_and_sent(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;
    let (_, other_key) = cp.tenant_with_key("Others", "plan_premium").await;
    let stranger = cp
        .user_with_token(&other_key, "fan-1", "Same id, other tenant")
        .await;

    // A real PNG and a real MP3: their measures come back.
    let png = std::fs::read(media::make_png(dir.path(), "pattern", 64, 48).await).expect("png");
    let image = upload(&cp, &fan, "image/png", png.clone()).await;
    assert_eq!(image["mediaType"], "image", "{image}");
    assert_eq!(image["contentType"], "image/png");
    assert_eq!(image["bytes"], png.len());
    assert_eq!(
        (image["width"].clone(), image["height"].clone()),
        (json!(64), json!(48))
    );
    assert!(image.get("durationMs").is_none(), "{image}");
    let url = image["url"].as_str().expect("url").to_string();
    assert_eq!(
        url,
        format!("/v1/attachments/{}", image["id"].as_str().expect("id"))
    );
    let tags = Tags {
        artist: "Fan One",
        title: "Voice note",
        album: "",
    };
    let mp3_path = media::make_track(dir.path(), "note", Kind::Mp3, 1.5, 440, &tags).await;
    let mp3 = std::fs::read(mp3_path).expect("mp3");
    let audio = upload(&cp, &fan, "audio/mpeg", mp3.clone()).await;
    assert_eq!(audio["mediaType"], "audio", "{audio}");
    let ms = audio["durationMs"].as_u64().expect("duration");
    assert!(
        (1400..=1700).contains(&ms),
        "1.5 s of audio measured as {ms} ms"
    );
    assert!(audio.get("width").is_none(), "{audio}");

    let mp4 = std::fs::read(media::make_video(dir.path(), "clip", 160, 120, 1).await).expect("mp4");
    let video = upload(&cp, &fan, "video/mp4", mp4.clone()).await;
    assert_eq!(video["mediaType"], "video", "{video}");
    assert_eq!(
        (video["width"].clone(), video["height"].clone()),
        (json!(160), json!(120))
    );
    let ms = video["durationMs"].as_u64().expect("duration");
    assert!(
        (900..=1100).contains(&ms),
        "1 s of video measured as {ms} ms"
    );

    // Content that is not what its type says, and types attachments may not have.
    let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let r = cp
        .raw(Method::POST, UPLOAD, &fan, Some("image/png"), noise)
        .await
        .problem(422);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("image/png"),
        "{}",
        r.text
    );
    let r = cp
        .raw(Method::POST, UPLOAD, &fan, Some("image/jpeg"), mp3.clone())
        .await
        .problem(422);
    assert!(r.text.contains("MP3 audio"), "{}", r.text);
    cp.raw(Method::POST, UPLOAD, &fan, Some("audio/mpeg"), png.clone())
        .await
        .problem(422);
    let r = cp
        .raw(Method::POST, UPLOAD, &fan, Some("audio/mp4"), mp4)
        .await
        .problem(422);
    assert!(r.text.contains("with video"), "{}", r.text);
    cp.raw(
        Method::POST,
        UPLOAD,
        &fan,
        Some("text/html"),
        b"<script>alert(1)</script>".to_vec(),
    )
    .await
    .problem(415);
    // Only end users upload: a tenant key is refused before the body is read.
    cp.raw(Method::POST, UPLOAD, &key, Some("image/png"), png.clone())
        .await
        .problem(403);

    // Served without a token, as uploaded, never sniffed or run; ranges for players.
    let resp = fetch(&cp, &url, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert!(header(&resp, "content-security-policy").contains("sandbox"));
    assert!(header(&resp, "cache-control").starts_with("private"));
    assert_eq!(resp.bytes().await.expect("body").as_ref(), png.as_slice());
    let audio_url = audio["url"].as_str().expect("url");
    let resp = fetch(&cp, audio_url, Some("bytes=0-9")).await;
    assert_eq!(resp.status(), 206);
    assert_eq!(header(&resp, "content-type"), "audio/mpeg");
    assert_eq!(resp.bytes().await.expect("body").as_ref(), &mp3[..10]);
    let unknown = "/v1/attachments/att_00000000000000000000000000000000";
    assert_eq!(fetch(&cp, unknown, None).await.status(), 404);

    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    sio.connect("creator", &creator)
        .await
        .expect("creator connects");
    sio.connect("stranger", &stranger)
        .await
        .expect("stranger connects");

    // Only the uploader sends their attachment, with its own type.
    let ack = sio
        .emit(
            "creator",
            "send-message",
            json!({"receiverId": "fan-1", "mediaUrl": url}),
        )
        .await;
    assert_error(&ack, "not_found");
    let ack = sio
        .emit(
            "stranger",
            "send-message",
            json!({"receiverId": "creator-1", "mediaUrl": url}),
        )
        .await;
    assert_error(&ack, "not_found");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "mediaUrl": url, "mediaType": "video"}),
        )
        .await;
    assert_error(&ack, "invalid_payload");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "mediaUrl": "https://elsewhere.example/cat.png"}),
        )
        .await;
    assert_error(&ack, "invalid_payload");

    // An image with no text: the receiver gets its URL and type, and fetches the same bytes.
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "", "mediaUrl": url}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = sio.event("creator", "receive-message").await;
    assert_eq!(got["id"], ack["id"]);
    assert_eq!(got["mediaUrl"], url.as_str());
    assert_eq!(got["mediaType"], "image");
    assert_eq!(got["content"], "");
    let resp = fetch(&cp, got["mediaUrl"].as_str().expect("url"), None).await;
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_eq!(resp.bytes().await.expect("body").as_ref(), png.as_slice());
    // Audio with a caption, the type stated.
    let voice = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "listen 🎧", "mediaUrl": audio_url, "mediaType": "audio"}),
        )
        .await;
    assert_eq!(voice["ok"], true, "{voice}");
    assert_eq!(
        sio.event("creator", "receive-message").await["mediaType"],
        "audio"
    );

    // The history and the conversation list carry them too.
    let history = cp
        .get("/v1/me/conversations/fan-1/messages", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(history["items"][0]["mediaUrl"], audio_url, "{history}");
    assert_eq!(history["items"][1]["mediaUrl"], url.as_str());
    assert_eq!(history["items"][1]["mediaType"], "image");
    let list = cp
        .get("/v1/me/conversations", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(
        list["items"][0]["lastMessage"]["mediaType"], "audio",
        "{list}"
    );

    // Deleting the message deletes the attachment it alone carried.
    let ack = sio
        .emit("fan", "delete-message", json!({"messageId": ack["id"]}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(fetch(&cp, &url, None).await.status(), 404);
    assert_eq!(fetch(&cp, audio_url, None).await.status(), 200);
    cp.stop().await;
}

async fn the_plan_bounds_attachments(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let png = std::fs::read(media::make_png(dir.path(), "big", 320, 240).await).expect("png");
    let small = std::fs::read(media::make_png(dir.path(), "small", 16, 16).await).expect("png");
    let limit = 2000;
    assert!(
        png.len() > limit && small.len() < limit,
        "{} {}",
        png.len(),
        small.len()
    );
    cp.patch(
        "/v1/plans/plan_premium",
        &cp.admin,
        json!({"limits": {"attachment_bytes": limit}}),
    )
    .await
    .expect(200);

    // Over the limit: refused by its announced length, and while streaming when none is.
    let r = cp
        .raw(Method::POST, UPLOAD, &fan, Some("image/png"), png.clone())
        .await
        .problem(413);
    assert_eq!(r.body["limit"], "attachment_bytes", "{}", r.text);
    assert!(r.text.contains("2000 bytes"), "{}", r.text);
    let (status, body) = media::post_chunked(&cp, UPLOAD, &fan, "image/png", &png).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("attachment_bytes"), "{body}");
    assert!(
        media::files_under(&cp.media_dir).is_empty(),
        "nothing of a refused upload stays: {:?}",
        media::files_under(&cp.media_dir)
    );
    upload(&cp, &fan, "image/png", small).await;

    // A plan without messaging has no attachments.
    let (_, basic_key) = cp.tenant_with_key("Radio", "plan_basic").await;
    let listener = cp.user_with_token(&basic_key, "listener", "Lis").await;
    let r = cp
        .raw(Method::POST, UPLOAD, &listener, Some("image/png"), png)
        .await
        .problem(403);
    assert!(r.text.contains("messaging"), "{}", r.text);
    cp.stop().await;
}

async fn attachments_count_against_the_plans_storage(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let small = std::fs::read(media::make_png(dir.path(), "small", 16, 16).await).expect("png");
    let big = std::fs::read(media::make_png(dir.path(), "big", 320, 240).await).expect("png");
    // The small one fits, the big one then does not (each is far below attachment_bytes).
    let quota = small.len() + big.len() - 1;
    cp.patch(
        "/v1/plans/plan_premium",
        &cp.admin,
        json!({"limits": {"storage_bytes": quota}}),
    )
    .await
    .expect(200);
    upload(&cp, &fan, "image/png", small.clone()).await;
    let me = cp.get("/v1/me", &key).await.expect(200).body;
    assert_eq!(me["storage"]["attachment_bytes"], small.len(), "{me}");
    assert_eq!(me["storage"]["used_bytes"], small.len(), "{me}");
    assert_eq!(me["storage"]["limit_bytes"], quota, "{me}");

    let r = cp
        .raw(Method::POST, UPLOAD, &fan, Some("image/png"), big.clone())
        .await
        .problem(413);
    assert_eq!(r.body["limit"], "storage_bytes", "{}", r.text);
    assert!(
        r.text.contains(&format!("uses {}", small.len())),
        "{}",
        r.text
    );
    assert_eq!(
        media::files_under(&cp.media_dir).len(),
        1,
        "only the small one's blob: {:?}",
        media::files_under(&cp.media_dir)
    );
    let me = cp.get("/v1/me", &key).await.expect(200).body;
    assert_eq!(me["storage"]["used_bytes"], small.len(), "{me}");
    cp.stop().await;
}

/// Where the media store keeps the blob of `bytes`.
fn blob_of(cp: &TestControlPlane, bytes: &[u8]) -> std::path::PathBuf {
    let sha = format!("{:x}", Sha256::digest(bytes));
    cp.media_dir.join(&sha[..2]).join(&sha)
}

async fn unsent_attachments_are_swept_after_the_grace(b: Backend) {
    let Some(cp) = TestControlPlane::start_with(b, |cfg| {
        cfg.media.unsent_attachment_grace = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    cp.user_with_token(&key, "creator-1", "Cleo").await;
    let shared = std::fs::read(media::make_png(dir.path(), "shared", 32, 32).await).expect("png");
    let lone = std::fs::read(media::make_png(dir.path(), "lone", 16, 16).await).expect("png");
    // Sent at once: kept. The same content uploaded again and never sent: its row goes, the
    // blob stays for the sent one. Other content never sent: row and blob go.
    let sent = upload(&cp, &fan, "image/png", shared.clone()).await;
    let twin = upload(&cp, &fan, "image/png", shared.clone()).await;
    let unsent = upload(&cp, &fan, "image/png", lone.clone()).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "mediaUrl": sent["url"]}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(blob_of(&cp, &lone).is_file());

    let url = |a: &Value| a["url"].as_str().expect("url").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while fetch(&cp, &url(&unsent), None).await.status() != 404
        || fetch(&cp, &url(&twin), None).await.status() != 404
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unsent attachments still served 15 s after a 1 s grace"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sweep that removed them saw the sent one, as old: a message carries it.
    let resp = fetch(&cp, &url(&sent), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.expect("body").as_ref(),
        shared.as_slice()
    );
    assert!(
        blob_of(&cp, &shared).is_file(),
        "the blob the sent one names"
    );
    assert!(!blob_of(&cp, &lone).exists(), "the blob no row names");
    let me = cp.get("/v1/me", &key).await.expect(200).body;
    assert_eq!(me["storage"]["attachment_bytes"], shared.len(), "{me}");
    // The swept one cannot be sent any more.
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "mediaUrl": twin["url"]}),
        )
        .await;
    assert_error(&ack, "not_found");
    // The metrics count both removed uploads and at least one round without an error.
    let m = cp.call(Method::GET, "/metrics", None, None).await.text;
    let series = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{m}"))
    };
    assert_eq!(series("onda_media_unsent_attachments_removed_total "), 2.0);
    assert!(series("onda_media_unsent_sweeps_total{result=\"ok\"} ") >= 1.0);
    assert_eq!(
        series("onda_media_unsent_sweeps_total{result=\"error\"} "),
        0.0
    );
    cp.stop().await;
}

/// The sweep and a send meeting on one attachment, at the database, in both orders: the one that
/// marks or deletes the row first wins, and the other sees it. A send that marked it keeps it
/// from a sweep that waits for its commit; a sweep that deleted it first makes the send find
/// nothing to mark.
async fn the_sweep_and_a_send_never_both_win(b: Backend) {
    use onda_control_plane::db::{self, attachments};
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (tenant, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let png = std::fs::read(media::make_png(dir.path(), "p", 16, 16).await).expect("png");
    let first = upload(&cp, &fan, "image/png", png.clone()).await;
    let second = upload(&cp, &fan, "image/png", png).await;
    let id = |a: &Value| a["id"].as_str().expect("id").to_string();
    let db = db::Db::connect(cp.database_url(), 4)
        .await
        .expect("database");
    // Everything uploaded so far counts as past the grace.
    let later = db::now_millis() + 60_000;

    // The send marks first; the sweep runs before its commit.
    let mut send = db.begin().await.expect("begin");
    let marked = attachments::mark_sent(&mut send, &id(&first), &tenant, "fan-1", db::now_millis())
        .await
        .expect("mark");
    assert!(marked);
    let sweep = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await?;
            let gone = attachments::delete_unsent(&mut tx, later, 100).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(gone.len())
        })
    };
    if b == Backend::Postgres {
        wait_for_lock_wait(&db).await;
    }
    send.commit().await.expect("commit");
    // The second (unsent) goes; the first, sent, stays.
    assert_eq!(sweep.await.expect("task").expect("sweep"), 1);
    let mut conn = db.conn().await.expect("conn");
    assert!(
        attachments::get(&mut conn, &id(&first))
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        attachments::get(&mut conn, &id(&second))
            .await
            .expect("get")
            .is_none()
    );
    drop(conn);

    // The sweep deletes first; the send waits for it and finds nothing.
    let third = upload(
        &cp,
        &fan,
        "image/png",
        std::fs::read(media::make_png(dir.path(), "q", 8, 8).await).expect("png"),
    )
    .await;
    let mut sweep = db.begin().await.expect("begin");
    let gone = attachments::delete_unsent(&mut sweep, later, 100)
        .await
        .expect("sweep");
    assert_eq!(gone.len(), 1);
    let send = {
        let db = db.clone();
        let third = id(&third);
        let tenant = tenant.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await?;
            let marked =
                attachments::mark_sent(&mut tx, &third, &tenant, "fan-1", db::now_millis()).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(marked)
        })
    };
    if b == Backend::Postgres {
        wait_for_lock_wait(&db).await;
    }
    sweep.commit().await.expect("commit");
    assert!(
        !send.await.expect("task").expect("send"),
        "nothing left to send"
    );
    db.close().await;
    cp.stop().await;
}

/// Waits until a statement of this test's database waits for a row lock (PostgreSQL).
async fn wait_for_lock_wait(db: &onda_control_plane::db::Db) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = db.conn().await.expect("conn");
        let waiting: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second statement never waited for the first's row lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_public_url_makes_attachment_urls_absolute(b: Backend) {
    let base = "https://panel.example.com/onda";
    let Some(cp) = TestControlPlane::start_with(b, |cfg| {
        cfg.public_url = Some(base.to_string());
    })
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;
    let png = std::fs::read(media::make_png(dir.path(), "p", 16, 16).await).expect("png");
    let image = upload(&cp, &fan, "image/png", png.clone()).await;
    let id = image["id"].as_str().expect("id");
    let path = format!("/v1/attachments/{id}");
    assert_eq!(image["url"], format!("{base}{path}"), "{image}");
    // This server answers the path (the proxy at the public URL forwards it).
    assert_eq!(fetch(&cp, &path, None).await.status(), 200);

    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    sio.connect("creator", &creator)
        .await
        .expect("creator connects");
    // The absolute url is sent as it was given, and so is the path alone; both carry it.
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "mediaUrl": image["url"]}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = sio.event("creator", "receive-message").await;
    assert_eq!(got["mediaUrl"], image["url"], "{got}");
    let again = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "mediaUrl": path}),
        )
        .await;
    assert_eq!(again["ok"], true, "{again}");
    let history = cp
        .get("/v1/me/conversations/fan-1/messages", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(history["items"][0]["mediaUrl"], image["url"], "{history}");
    // Deleting one message keeps the attachment the other carries; deleting both deletes it.
    for (m, served) in [(&ack, 200), (&again, 404)] {
        let del = sio
            .emit("fan", "delete-message", json!({"messageId": m["id"]}))
            .await;
        assert_eq!(del["ok"], true, "{del}");
        assert_eq!(fetch(&cp, &path, None).await.status(), served);
    }
    cp.stop().await;
}

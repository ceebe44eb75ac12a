//! Stream sessions through a real cluster, on SQLite and PostgreSQL: ffmpeg publishes RTMP to
//! the node the leader placed a subscribers-only stream on; the leader opens a session, the
//! creator's subscriber gets the go-live notification on their socket and, in the stream's
//! room, `stream-started` (then `stream-ended`), a viewer's playback
//! token and playlist fetches make the session's unique and peak viewers, a tip during it counts
//! in its tips; when ffmpeg stops the session closes with its duration, the webhooks
//! `stream.started` and `stream.ended` are in the outbox, and only the tenant and the creator
//! read the sessions (another tenant gets 404). Below the API, the database's side is driven as
//! two leaders at once would drive it.

use onda_tests::cluster::ControlPlane;
use onda_tests::db::Backend;
use onda_tests::edge::ffmpeg_rtmp;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::realtime::Sio;
use onda_tests::{on_both_backends, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_publish_is_a_session_with_its_viewers_tips_and_go_live_events,
    two_leaders_never_open_count_or_close_a_session_twice,
);

/// A user of tenant `key` (`body` as `PUT /v1/users/{id}` takes it) and a token of theirs.
async fn user(cp: &ControlPlane, key: &str, id: &str, body: Value) -> String {
    let (s, u) = cp
        .tenant_call(key, Method::PUT, &format!("/v1/users/{id}"), Some(body))
        .await;
    assert_eq!(s, 201, "{u}");
    let (s, t) = cp
        .tenant_call(
            key,
            Method::POST,
            &format!("/v1/users/{id}/tokens"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().expect("token").to_string()
}

/// A POST with an `Idempotency-Key`: status and JSON.
async fn post_keyed(cp: &ControlPlane, token: &str, path: &str, key: &str, body: Value) -> u16 {
    let r = cp
        .http
        .post(format!("{}{path}", cp.api))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("request");
    r.status().as_u16()
}

/// The stream's newest session as `token` reads it at `path`.
async fn newest(cp: &ControlPlane, token: &str, path: &str) -> Value {
    let (s, page) = cp.tenant_call(token, Method::GET, path, None).await;
    assert_eq!(s, 200, "{page}");
    page["items"][0].clone()
}

/// The first `stream.started` notification `client` receives within 30 s.
async fn live_notification(sio: &mut Sio, client: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let push = sio
            .event_within(client, "notification", left)
            .await
            .expect("a stream.started notification within 30 s");
        if push["notification"]["type"] == "stream.started" {
            return push["notification"].clone();
        }
    }
}

/// The value of series `name` (with its labels as Prometheus writes them) in the control
/// plane's /metrics.
async fn gauge(cp: &ControlPlane, name: &str) -> Option<String> {
    let text = onda_shared::http::get(format!("{}/metrics", cp.api))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
}

/// The outbox's payloads of `event_type`, oldest first.
async fn webhook_events(fx: &ClusterFixture, event_type: &str) -> Vec<Value> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&fx.db.url).await.expect("db");
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT payload FROM webhook_events WHERE event_type = $1 ORDER BY created_ms, id",
    )
    .bind(event_type)
    .fetch_all(&mut c)
    .await
    .expect("outbox");
    rows.into_iter()
        .map(|(p,)| serde_json::from_str(&p).expect("json"))
        .collect()
}

async fn a_publish_is_a_session_with_its_viewers_tips_and_go_live_events(b: Backend) {
    let Some(fx) = ClusterFixture::start_on(ClusterSpec {
        admin_token: "sessions-test-admin-token-0123456",
        backend: b,
        node_ttl_ms: 1000,
        nodes: &["live-1"],
        env: &[("ONDA_WEBHOOKS_ALLOW_PRIVATE", "true")],
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let cp = &fx.cp;
    let key = cp.tenant_key("Creators").await;
    let star = user(
        cp,
        &key,
        "star",
        json!({"display_name": "Star", "creator": true}),
    )
    .await;
    let fan = user(cp, &key, "fan", json!({"display_name": "Fan"})).await;
    let ends = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let (s, sub) = cp
        .tenant_call(
            &key,
            Method::PUT,
            "/v1/creators/star/subscribers/fan",
            Some(json!({"ends_at": ends})),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    let credited = post_keyed(
        cp,
        &key,
        "/v1/users/fan/wallet/credits",
        "credit-1",
        json!({"amount": 1000, "reference": "psp_1"}),
    )
    .await;
    assert_eq!(credited, 201);
    let (s, hook) = cp
        .tenant_call(
            &key,
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["stream.started", "stream.ended"]})),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let (stream, ingest) = cp
        .placed_stream(
            &key,
            json!({"name": "Friday set", "access": "subscribers", "creator_id": "star"}),
        )
        .await;
    let id = stream["id"].as_str().expect("id").to_string();
    let sessions = format!("/v1/streams/{id}/sessions");
    let (s, none) = cp.tenant_call(&key, Method::GET, &sessions, None).await;
    assert_eq!(
        (s, &none["items"]),
        (200, &json!([])),
        "no publish, no session"
    );

    let mut sio = Sio::start(&cp.api).await;
    sio.connect("fan", &fan).await.expect("the fan connects");
    let joined = sio
        .emit("fan", "join-stream", json!({ "streamId": id }))
        .await;
    assert_eq!(
        (&joined["ok"], &joined["stream"]["live"]),
        (&json!(true), &json!(false)),
        "{joined}"
    );
    let publish = ingest["publish_url"].as_str().expect("publish url");
    let mut publisher = ffmpeg_rtmp(publish, 25);

    // On the air: the subscriber hears of it, the stream's room too, and the session is open.
    let told = live_notification(&mut sio, "fan").await;
    assert_eq!(told["title"], "Star is live: Friday set", "{told}");
    assert_eq!(told["data"]["streamId"], json!(id), "{told}");
    let open = newest(cp, &key, &sessions).await;
    assert_eq!(open["id"], told["data"]["sessionId"], "{open}");
    let started = sio.event("fan", "stream-started").await;
    assert_eq!(
        started,
        json!({"streamId": id, "sessionId": open["id"], "startedAt": open["started_at"]})
    );
    assert_eq!(
        (&open["live"], &open["ended_at"]),
        (&json!(true), &Value::Null)
    );
    assert_eq!(gauge(cp, "onda_live_sessions").await.as_deref(), Some("1"));

    // A viewer: the playback token counts them once however often they ask; their playlist
    // fetches make the edge's viewer count, which the leader samples.
    let playback = format!("/v1/me/streams/{id}/playback");
    let mut watch = String::new();
    for _ in 0..2 {
        let (s, token) = cp.tenant_call(&fan, Method::POST, &playback, None).await;
        assert_eq!(s, 201, "{token}");
        watch = format!("{}{}", cp.api, token["watch_path"].as_str().expect("path"));
    }
    let watched = wait_for("a sampled viewer", Duration::from_secs(30), || async {
        let list = onda_shared::http::get(&watch)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        if !list.contains("#EXT") {
            return None;
        }
        let s = newest(cp, &key, &sessions).await;
        (s["peak_viewers"].as_u64() >= Some(1)).then_some(s)
    })
    .await;
    assert_eq!(watched["unique_viewers"], 1, "{watched}");
    let tipped = post_keyed(
        cp,
        &fan,
        "/v1/me/tips",
        "tip-1",
        json!({"creatorId": "star", "amount": 250, "message": "great set"}),
    )
    .await;
    assert_eq!(tipped, 201);
    let said = sio
        .emit(
            "fan",
            "chat-message",
            json!({ "streamId": id, "content": "hello from the front row" }),
        )
        .await;
    assert_eq!(said["ok"], true, "{said}");

    // An open session shows its figures so far: its duration grows while it is on the air.
    wait_for(
        "two seconds on the air",
        Duration::from_secs(20),
        || async {
            let s = newest(cp, &key, &sessions).await;
            (s["duration_secs"].as_u64() >= Some(2)).then_some(())
        },
    )
    .await;

    // Off the air: closed after the grace, at the last moment it was seen on the air.
    publisher.kill();
    let closed = wait_for("the session closed", Duration::from_secs(20), || async {
        let s = newest(cp, &key, &sessions).await;
        (s["live"] == false).then_some(s)
    })
    .await;
    assert_eq!(closed["id"], open["id"], "{closed}");
    let ended = sio.event("fan", "stream-ended").await;
    assert_eq!(
        ended,
        json!({"streamId": id, "sessionId": open["id"], "endedAt": closed["ended_at"]})
    );
    assert!(closed["ended_at"].is_string(), "{closed}");
    let at = |field: &str| {
        time::OffsetDateTime::parse(
            closed[field].as_str().expect("a time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    let lasted = at("ended_at") - at("started_at");
    assert_eq!(
        closed["duration_secs"].as_i64(),
        Some(lasted.whole_seconds()),
        "{closed}"
    );
    assert!(lasted >= time::Duration::seconds(1), "{closed}");
    assert!(closed["peak_viewers"].as_u64() >= Some(1), "{closed}");
    assert!(closed["viewer_minutes"].as_f64() > Some(0.0), "{closed}");
    assert_eq!(
        (
            &closed["unique_viewers"],
            &closed["chat_messages"],
            &closed["tips"],
            &closed["pay_per_view"],
            &closed["currency"]
        ),
        (
            &json!(1),
            &json!(1),
            &json!({"count": 1, "amount": 250}),
            &json!({"count": 0, "amount": 0}),
            &json!("USD")
        ),
        "{closed}"
    );
    assert_eq!(gauge(cp, "onda_live_sessions").await.as_deref(), Some("0"));
    let tips_paid = "onda_ledger_paid_minor_units_total{currency=\"USD\",source=\"tip\"}";
    assert_eq!(gauge(cp, tips_paid).await.as_deref(), Some("250"));
    let started = webhook_events(&fx, "stream.started").await;
    let ended = webhook_events(&fx, "stream.ended").await;
    assert_eq!(
        (started.len(), ended.len()),
        (1, 1),
        "{started:?} {ended:?}"
    );
    assert_eq!(started[0]["id"], open["id"]);
    assert_eq!(ended[0], closed, "the webhook carries the closed session");

    // The creator reads them too; the fan and another tenant do not.
    let mine = format!("/v1/me/streams/{id}/sessions");
    assert_eq!(newest(cp, &star, &mine).await, closed);
    let (s, refused) = cp.tenant_call(&fan, Method::GET, &mine, None).await;
    assert_eq!(s, 403, "{refused}");
    let other = cp.tenant_key("Other").await;
    let (s, hidden) = cp.tenant_call(&other, Method::GET, &sessions, None).await;
    assert_eq!(s, 404, "{hidden}");
    let (s, bad) = cp
        .tenant_call(&key, Method::GET, &format!("{sessions}?limit=0"), None)
        .await;
    assert_eq!(s, 400, "{bad}");
}

/// The database side of sessions, driven as two leaders at once would: one open session per
/// stream (the partial unique index), a sample only from the row it was computed from, a close
/// once; unique viewers counted once; the money window from the start to the closing; pages
/// newest first.
async fn two_leaders_never_open_count_or_close_a_session_twice(b: Backend) {
    use onda_control_plane::db::{Db, stream_sessions as ss};
    let Some(test_db) = onda_tests::db::TestDb::new(b).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 2).await.expect("db");
    let mut c = db.conn().await.expect("conn");
    sqlx::query(
        "INSERT INTO tenants (id, name, email, plan_id, status, currency, platform_fee_bps, \
         created_at, updated_at) VALUES ('ten_1', 'T', '', 'plan_premium', 'active', 'EUR', \
         2000, 0, 0)",
    )
    .execute(&mut *c)
    .await
    .expect("tenant");
    let row = |id: &str, at: i64| ss::Open {
        id: id.to_string(),
        tenant_id: "ten_1".to_string(),
        stream_id: "lvs_1".to_string(),
        creator_id: Some("star".to_string()),
        started_ms: at,
        peak_viewers: 0,
        viewer_ms: 0,
        sampled_ms: at,
        on_air_ms: at,
    };
    let first = row("ses_1", 1_000);
    assert!(ss::open(&mut c, &first).await.expect("open"));
    assert!(
        !ss::open(&mut c, &row("ses_2", 1_001)).await.expect("open"),
        "a second leader cannot open a second session of the stream"
    );
    assert_eq!(
        ss::open_all(&mut c).await.expect("read"),
        vec![first.clone()]
    );

    let sampled = ss::Open {
        peak_viewers: 3,
        viewer_ms: 3_000,
        sampled_ms: 2_000,
        on_air_ms: 2_000,
        ..first.clone()
    };
    assert!(ss::sample(&mut c, &sampled, 1_000).await.expect("sample"));
    let again = ss::Open {
        viewer_ms: 6_000,
        ..sampled.clone()
    };
    assert!(
        !ss::sample(&mut c, &again, 1_000).await.expect("sample"),
        "an interval is counted once"
    );
    assert_eq!(ss::open_all(&mut c).await.expect("read"), vec![sampled]);

    for _ in 0..2 {
        ss::add_viewer(&mut c, "ten_1", "lvs_1", "fan", 1_500)
            .await
            .expect("viewer");
    }
    ss::add_viewer(&mut c, "ten_1", "lvs_1", "other", 1_600)
        .await
        .expect("viewer");
    ss::add_viewer(&mut c, "ten_1", "lvs_9", "fan", 1_600)
        .await
        .expect("a stream without a session counts nobody");
    ss::add_viewer(&mut c, "ten_2", "lvs_1", "fan", 1_600)
        .await
        .expect("another tenant's stream id counts nobody");

    // Tips to the creator and purchases of the stream: only those while it was open count.
    for (id, source, who, reference, amount, at) in [
        ("txn_1", "tip", "star", None, 100, 999),
        ("txn_2", "tip", "star", None, 200, 1_500),
        ("txn_3", "tip", "someone", None, 400, 1_500),
        ("txn_4", "purchase", "star", Some("lvs_1"), 300, 2_500),
        ("txn_5", "purchase", "star", Some("lvs_2"), 800, 2_500),
        ("txn_6", "tip", "star", None, 1_000, 6_000),
    ] {
        sqlx::query(
            "INSERT INTO ledger_transactions (id, tenant_id, source, user_id, counterparty_id, \
             amount, currency, reference, created_ms) \
             VALUES ($1, 'ten_1', $2, 'fan', $3, $4, 'EUR', $5, $6)",
        )
        .bind(id)
        .bind(source)
        .bind(who)
        .bind(amount)
        .bind(reference)
        .bind(at)
        .execute(&mut *c)
        .await
        .expect("transaction");
    }
    // Chat said in the stream while it was open counts; tips shown in it are tips.
    for (id, stream, kind, at) in [
        ("chm_1", "lvs_1", "message", 1_200),
        ("chm_2", "lvs_1", "message", 4_900),
        ("chm_3", "lvs_1", "tip", 1_500),
        ("chm_4", "lvs_1", "message", 900),
        ("chm_5", "lvs_2", "message", 1_200),
    ] {
        sqlx::query(
            "INSERT INTO stream_chat_messages (id, tenant_id, stream_id, creator_id, user_id, \
             kind, content, created_ms) VALUES ($1, 'ten_1', $2, 'star', 'fan', $3, 'hi', $4)",
        )
        .bind(id)
        .bind(stream)
        .bind(kind)
        .bind(at)
        .execute(&mut *c)
        .await
        .expect("chat");
    }
    // Last seen on the air at 2 000, closed by the leader at 5 000.
    assert!(
        ss::close(&mut c, "ses_1", 2_000, 5_000)
            .await
            .expect("close")
    );
    assert!(
        !ss::close(&mut c, "ses_1", 2_100, 5_100)
            .await
            .expect("close"),
        "closed once"
    );
    let s = ss::get(&mut c, "ses_1", 9_000)
        .await
        .expect("get")
        .expect("the session");
    assert_eq!(
        (
            s.live,
            s.duration_secs,
            s.peak_viewers,
            s.viewer_minutes,
            s.unique_viewers,
            s.chat_messages
        ),
        (false, 1, 3, 0.05, 2, 2),
        "{s:?}"
    );
    assert_eq!(
        (
            s.tips.count,
            s.tips.amount,
            s.pay_per_view.count,
            s.pay_per_view.amount
        ),
        (1, 200, 1, 300),
        "{s:?}"
    );
    assert_eq!(s.currency, "EUR");

    // After the close the stream may open a new session; pages are newest first.
    assert!(ss::open(&mut c, &row("ses_3", 7_000)).await.expect("open"));
    let page = ss::list(&mut c, ("ten_1", "lvs_1"), 1, "", 8_000)
        .await
        .expect("list");
    assert_eq!(page.items[0].id, "ses_3");
    assert_eq!(page.items[0].duration_secs, 1, "open: up to now");
    assert!(page.items[0].live);
    let cursor = page.next_cursor.expect("a second page");
    let rest = ss::list(&mut c, ("ten_1", "lvs_1"), 1, &cursor, 8_000)
        .await
        .expect("list");
    assert_eq!(rest.items, vec![s]);
    assert_eq!(rest.next_cursor, None);
    let other = ss::list(&mut c, ("ten_2", "lvs_1"), 10, "", 8_000)
        .await
        .expect("list");
    assert!(other.items.is_empty(), "another tenant sees none");
    drop(c);
    db.close().await;
}

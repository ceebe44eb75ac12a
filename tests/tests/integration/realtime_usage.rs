//! Realtime plan limits and metering with the official `socket.io-client`, on SQLite and
//! PostgreSQL: the plan's `max_realtime_connections` refuses the handshake beyond it (also over
//! two replicas racing), lowering it ends no connection, and the messages and connection time
//! of a tenant's users reach its draft invoice with the quantities the clients saw.

use onda_control_plane::billing::Period;
use onda_control_plane::db::{Db, presence};
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use onda_tests::realtime::Sio;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

on_both_backends!(
    the_connection_limit_refuses_the_handshake_beyond_it,
    messages_and_connection_time_reach_the_draft_invoice,
);

/// How long a condition polled for may take.
const DEADLINE: Duration = Duration::from_secs(15);

/// A plan with messaging, `max` realtime connections and the given prices.
async fn plan(cp: &TestControlPlane, name: &str, max: u32, prices: Value) -> String {
    let body = json!({
        "name": name,
        "limits": {"max_stations": 1, "max_mounts_per_station": 1, "allowed_formats": ["mp3"],
                   "max_bitrate_kbps": 128, "max_listeners_per_station": 10,
                   "storage_bytes": 1_000_000, "max_live_streams": 0,
                   "max_realtime_connections": max},
        "features": {"messaging": true},
        "prices": prices,
    });
    let p = cp.post("/v1/plans", &cp.admin, body).await.expect(201).body;
    assert_eq!(p["limits"]["max_realtime_connections"], max, "{p}");
    p["id"].as_str().expect("plan id").to_string()
}

fn free() -> Value {
    json!({"currency": "USD", "monthly_micros": 0, "overage_per_gb_micros": 0,
           "overage_per_listener_hour_micros": 0})
}

fn assert_limit_refusal(r: Result<(), String>, what: &str) {
    let e = r.expect_err(what);
    assert!(
        e.contains("max_realtime_connections") && e.contains("allows 2 realtime connections"),
        "{what}: {e}"
    );
}

/// Connects `client` until it is admitted (a closed socket's slot frees when the server has
/// handled its disconnect), within `DEADLINE`.
async fn connect_eventually(sio: &mut Sio, client: &str, token: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match sio.connect(client, token).await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                assert!(e.contains("max_realtime_connections"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{client} still refused after {DEADLINE:?}: {e}"),
        }
    }
}

async fn the_connection_limit_refuses_the_handshake_beyond_it(b: Backend) {
    let Some(cp) = TestControlPlane::start_with(b, |c| {
        c.realtime.usage_flush = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let plan = plan(&cp, "Two sockets", 2, free()).await;
    let (tenant, key) = cp.tenant_with_key("Small", &plan).await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;
    // Another tenant's sockets do not count against this one's.
    let (_, other_key) = cp.tenant_with_key("Other", &plan).await;
    let other = cp.user_with_token(&other_key, "x", "X").await;

    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("first socket");
    sio.connect("creator", &creator)
        .await
        .expect("second socket");
    assert_limit_refusal(sio.connect("fan-phone", &fan).await, "third socket");
    sio.connect("other-1", &other).await.expect("other tenant");
    sio.connect("other-2", &other).await.expect("other tenant");

    // Sockets that stay connected are not taken for ones that never arrived: once flushes
    // wrote 3 s of each one's time (each flush first looks for such sockets, older than 2 s),
    // both still count.
    let db = Db::connect(cp.database_url(), 1).await.expect("database");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut conn = db.conn().await.expect("conn");
        let written: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(connection_ms), 0) AS BIGINT) FROM realtime_usage \
             WHERE tenant_id = $1",
        )
        .bind(&tenant)
        .fetch_one(&mut *conn)
        .await
        .expect("written");
        if written >= 6_000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {written} ms written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut conn = db.conn().await.expect("conn");
    assert_eq!(
        presence::tenant_sockets(&mut conn, &tenant, 0)
            .await
            .expect("count"),
        2
    );
    drop(conn);
    db.close().await;
    assert_limit_refusal(sio.connect("fan-phone", &fan).await, "still two");

    // One closes: its slot is free again.
    sio.close("fan").await;
    connect_eventually(&mut sio, "fan-phone", &fan).await;
    assert_limit_refusal(sio.connect("fan-tablet", &fan).await, "over again");

    // Lowering the limit ends no connection: both sockets still work, new ones are refused.
    cp.patch(
        &format!("/v1/plans/{plan}"),
        &cp.admin,
        json!({"limits": {"max_realtime_connections": 1}}),
    )
    .await
    .expect(200);
    let ack = sio
        .emit(
            "fan-phone",
            "send-message",
            json!({"receiverId": "creator-1", "content": "still here"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        sio.event("creator", "receive-message").await["content"],
        "still here"
    );
    let e = sio
        .connect("fan-tablet", &fan)
        .await
        .expect_err("over the lowered limit");
    assert!(e.contains("allows 1 realtime connections"), "{e}");

    let metrics = cp.http.get(format!("{}/metrics", cp.url)).send().await;
    let metrics = metrics.expect("metrics").text().await.expect("text");
    let refused = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("onda_realtime_handshakes_total{outcome=\"connection_limit\"} ")
        })
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the refusals are counted");
    assert!(refused >= 3.0, "{refused}");
    cp.stop().await;
}

/// Two replicas over one PostgreSQL database hold one tenant's limit together: sockets on A
/// and B count against the same 2, also when handshakes race on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hold_the_connection_limit_together() {
    let Some(a) = TestControlPlane::start(Backend::Postgres).await else {
        return;
    };
    let b = a.replica().await;
    let plan = plan(&a, "Two sockets", 2, free()).await;
    let (tenant, key) = a.tenant_with_key("Small", &plan).await;
    let fan = a.user_with_token(&key, "fan-1", "Fan").await;
    let mut on_a = Sio::start(&a.url).await;
    let mut on_b = Sio::start(&b.url).await;
    on_a.connect("a1", &fan).await.expect("one on A");
    on_b.connect("b1", &fan).await.expect("one on B");
    assert_limit_refusal(on_a.connect("a2", &fan).await, "third on A");
    assert_limit_refusal(on_b.connect("b2", &fan).await, "third on B");
    on_b.close("b1").await;
    connect_eventually(&mut on_a, "a2", &fan).await;
    assert_limit_refusal(on_b.connect("b2", &fan).await, "A holds both");
    on_a.close("a1").await;
    on_a.close("a2").await;

    // Rounds of handshakes racing on the two replicas, two drivers on each: once the server
    // handled the previous round's closes (the presence tables count no socket of the
    // tenant), eight handshakes for two slots, and exactly two are admitted every time.
    let db = Db::connect(a.database_url(), 1).await.expect("database");
    let mut drivers = [
        on_a,
        Sio::start(&a.url).await,
        on_b,
        Sio::start(&b.url).await,
    ];
    for round in 0..5 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut conn = db.conn().await.expect("conn");
            let n = presence::tenant_sockets(&mut conn, &tenant, 0)
                .await
                .expect("count");
            if n == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{n} closed sockets still counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let [d1, d2, d3, d4] = &mut drivers;
        let (x1, x2, x3, x4) = tokio::join!(
            two_handshakes(d1, &fan),
            two_handshakes(d2, &fan),
            two_handshakes(d3, &fan),
            two_handshakes(d4, &fan)
        );
        let results = [x1, x2, x3, x4];
        let flat: Vec<&Result<(), String>> = results.iter().flatten().collect();
        for r in &flat {
            if let Err(e) = r {
                assert!(e.contains("max_realtime_connections"), "{e}");
            }
        }
        let admitted = flat.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 2, "round {round}, over a limit of 2: {flat:?}");
        for (d, r) in drivers.iter_mut().zip(&results) {
            for (name, r) in ["r1", "r2"].iter().zip(r) {
                if r.is_ok() {
                    d.close(name).await;
                }
            }
        }
    }
    db.close().await;
    drop(drivers);
    b.stop().await;
    a.stop().await;
}

/// Sockets `r1` and `r2` of the driver, one after the other.
async fn two_handshakes(d: &mut Sio, token: &str) -> [Result<(), String>; 2] {
    [d.connect("r1", token).await, d.connect("r2", token).await]
}

/// (kind, quantity, unit, amount) of the invoice's lines.
fn lines(inv: &Value) -> Vec<(String, String, String, u64)> {
    inv["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().expect("kind").to_string(),
                l["quantity"].as_str().expect("quantity").to_string(),
                l["unit"].as_str().expect("unit").to_string(),
                l["amount_micros"].as_u64().expect("amount"),
            )
        })
        .collect()
}

/// The tenant's draft invoice of this month, after a billing run.
async fn draft(cp: &TestControlPlane, tenant: &str) -> Value {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let period = Period::containing(now).to_string();
    cp.post("/v1/billing/runs", &cp.admin, json!({ "period": period }))
        .await
        .expect(200);
    let found = cp
        .list_all(
            &format!("/v1/invoices?tenant_id={tenant}&period={period}"),
            &cp.admin,
        )
        .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["status"], "draft");
    found[0].clone()
}

/// Messages cost 1.00 per 1000 and connection minutes 60.00 per 1000, none included: one
/// message is 1000 micros and one millisecond of connection 1 micro, so the lines' amounts are
/// the counts themselves. The connection time billed lies between what the clients saw (from
/// their connect to their close) and the time from before their handshakes to the invoice.
async fn messages_and_connection_time_reach_the_draft_invoice(b: Backend) {
    let Some(cp) = TestControlPlane::start_with(b, |c| {
        c.realtime.usage_flush = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let prices = json!({"currency": "USD", "monthly_micros": 0, "overage_per_gb_micros": 0,
        "overage_per_listener_hour_micros": 0, "included_connection_minutes": 0,
        "overage_per_1000_connection_minutes_micros": 60_000_000, "included_messages": 0,
        "overage_per_1000_messages_micros": 1_000_000});
    let plan = plan(&cp, "Metered", 10, prices).await;
    let (tenant, key) = cp.tenant_with_key("Metered", &plan).await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;

    let mut sio = Sio::start(&cp.url).await;
    let before = Instant::now();
    sio.connect("fan", &fan).await.expect("fan");
    let fan_in = Instant::now();
    sio.connect("creator", &creator).await.expect("creator");
    let creator_in = Instant::now();
    for (from, to, text) in [
        ("fan", "creator-1", "one"),
        ("creator", "fan-1", "two"),
        ("fan", "creator-1", "three"),
    ] {
        let ack = sio
            .emit(
                from,
                "send-message",
                json!({"receiverId": to, "content": text}),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    // Refused messages are not metered.
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "nobody", "content": "lost"}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "not_found", "{ack}");
    // Connected time to bill, well above the rounding of the line's quantity.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fan_out = Instant::now();
    sio.close("fan").await;
    let creator_out = Instant::now();
    sio.close("creator").await;
    let seen_ms = (fan_out - fan_in + (creator_out - creator_in)).as_millis() as u64;

    // The flush every second brings the connection time; poll until both sockets' is in.
    let deadline = Instant::now() + DEADLINE;
    let (inv, connection_ms) = loop {
        let inv = draft(&cp, &tenant).await;
        let connection = lines(&inv)
            .into_iter()
            .find(|l| l.0 == "connection_minutes_overage")
            .map_or(0, |l| l.3);
        if connection >= seen_ms {
            break (inv, connection);
        }
        assert!(
            Instant::now() < deadline,
            "the connection time never reached {seen_ms} ms: {inv}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let upper_ms = 2 * before.elapsed().as_millis() as u64;
    assert!(
        connection_ms <= upper_ms,
        "{connection_ms} ms billed, at most {upper_ms} possible"
    );
    eprintln!("connection time billed {connection_ms} ms, the clients saw {seen_ms} ms");
    let got = lines(&inv);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, "plan");
    let connection = &got[1];
    assert_eq!(connection.0, "connection_minutes_overage");
    assert_eq!(connection.2, "1000 connection minutes");
    // Thousands of minutes to six places: the amount in ms, rounded to 0.06 s.
    let quantity: f64 = connection.1.parse().expect("a decimal");
    assert!(
        (quantity * 60_000_000.0 - connection_ms as f64).abs() <= 60.0,
        "{connection:?}"
    );
    assert_eq!(
        got[2],
        (
            "messages_overage".to_string(),
            "0.003".to_string(),
            "1000 messages".to_string(),
            3000
        )
    );
    let descriptions: Vec<&str> = inv["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["description"].as_str())
        .collect();
    assert!(
        descriptions[1].starts_with("Realtime connection minutes beyond the 0 the Metered plan"),
        "{descriptions:?}"
    );
    assert!(
        descriptions[2].starts_with("Messages beyond the 0 the Metered plan"),
        "{descriptions:?}"
    );

    // The usage API shows the same: the tenant reads its own, the admin names the tenant.
    let usage = cp.get("/v1/realtime/usage", &key).await.expect(200).body;
    assert_eq!(usage["tenant_id"], tenant.as_str(), "{usage}");
    assert_eq!(usage["total"]["messages"], 3, "{usage}");
    let total_ms = usage["total"]["connection_ms"].as_u64().expect("ms");
    assert!(
        (connection_ms..=upper_ms).contains(&total_ms),
        "{total_ms} ms: {usage}"
    );
    let days = usage["days"].as_array().expect("days");
    assert!(
        (1..=2).contains(&days.len()),
        "today, or over midnight: {usage}"
    );
    let by_admin = cp
        .get(&format!("/v1/realtime/usage?tenant_id={tenant}"), &cp.admin)
        .await
        .expect(200)
        .body;
    assert_eq!(by_admin["total"]["messages"], 3, "{by_admin}");
    cp.get("/v1/realtime/usage", &cp.admin).await.problem(400);
    cp.get("/v1/realtime/usage?from=yesterday", &key)
        .await
        .problem(400);
    let (_, other_key) = cp.tenant_with_key("Other", &plan).await;
    cp.get(
        &format!("/v1/realtime/usage?tenant_id={tenant}"),
        &other_key,
    )
    .await
    .problem(404);
    cp.stop().await;
}

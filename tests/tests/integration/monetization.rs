//! Tips, earnings and payouts through the real server and `socket.io-client`, on SQLite and
//! PostgreSQL: a tip over REST and over the gateway (balances, fee, the creator's notification
//! and earnings event, the `tip.created` webhook row), retries with one key moving money once
//! (also across the two transports), bad input of every kind moving nothing, 50 tips at once
//! from one wallet never overdrawing it, earnings per day summed from the ledger, and payouts
//! requested, paid and rejected once, with the ledger check passing after each step.

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use onda_tests::realtime::Sio;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    a_tip_moves_money_once_and_tells_the_creator,
    bad_tips_are_refused_and_move_nothing,
    fifty_tips_at_once_never_overdraw,
    earnings_per_day_sum_the_ledger,
    payouts_are_requested_and_decided_once,
);

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) replayed: bool,
    pub(crate) text: String,
    pub(crate) body: Value,
}

/// A request with an optional `Idempotency-Key` and JSON body.
pub(crate) async fn send(
    cp: &TestControlPlane,
    (method, path): (Method, &str),
    token: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = cp
        .http
        .request(method, format!("{}{path}", cp.url))
        .bearer_auth(token);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        replayed,
        text,
        body,
    }
}

async fn tip(cp: &TestControlPlane, token: &str, key: &str, body: Value) -> Answer {
    send(
        cp,
        (Method::POST, "/v1/me/tips"),
        token,
        Some(key),
        Some(body),
    )
    .await
}

#[track_caller]
pub(crate) fn problem(a: &Answer, status: u16, says: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.body["status"], json!(status), "{}", a.text);
    let detail = a.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(says), "{detail:?} does not say {says:?}");
}

/// A tenant on Premium with a fan holding `credit` and a creator:
/// (API key, fan's token, creator's token).
pub(crate) async fn tenant(cp: &TestControlPlane, credit: i64) -> (String, String, String) {
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan", "Fan One").await;
    cp.call(
        Method::PUT,
        "/v1/users/star",
        Some(&key),
        Some(json!({"display_name": "Star", "creator": true})),
    )
    .await
    .expect(201);
    let star = cp
        .post("/v1/users/star/tokens", &key, json!({}))
        .await
        .expect(201)
        .body["token"]
        .as_str()
        .expect("token")
        .to_string();
    let c = send(
        cp,
        (Method::POST, "/v1/users/fan/wallet/credits"),
        &key,
        Some("credit-0"),
        Some(json!({"amount": credit, "reference": "psp_1"})),
    )
    .await;
    assert_eq!(c.status, 201, "{}", c.text);
    (key, fan, star)
}

pub(crate) async fn wallet(cp: &TestControlPlane, key: &str, user: &str) -> Value {
    cp.get(&format!("/v1/users/{user}/wallet"), key)
        .await
        .expect(200)
        .body
}

pub(crate) async fn assert_check_ok(cp: &TestControlPlane, key: &str, step: &str) {
    let c = cp.get("/v1/ledger/check", key).await.expect(200).body;
    assert_eq!(c["ok"], json!(true), "after {step}: {c}");
}

/// The `data` of the tenant's webhook events of `event_type`, oldest first, read from the
/// outbox table.
pub(crate) async fn webhook_events(cp: &TestControlPlane, event_type: &str) -> Vec<Value> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(cp.database_url())
        .await
        .expect("db");
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

/// Waits until each socket's connect handler has run (an answered event shows it did).
async fn joined(sio: &mut Sio, clients: &[&str]) {
    for client in clients {
        let ack = sio
            .emit(client, "typing-stop", json!({"receiverId": "someone-else"}))
            .await;
        assert_eq!(ack["ok"], true, "{client}: {ack}");
    }
}

async fn metric(cp: &TestControlPlane, series: &str) -> f64 {
    let text = cp.call(Method::GET, "/metrics", None, None).await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn a_tip_moves_money_once_and_tells_the_creator(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 5000).await;
    cp.post(
        "/v1/webhooks",
        &key,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["tip.created"]}),
    )
    .await
    .expect(201);
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("star", &star).await.expect("connects");
    sio.connect("fan", &fan).await.expect("connects");
    joined(&mut sio, &["star", "fan"]).await;

    let body = json!({"creatorId": "star", "amount": 999, "message": "great set 🎶"});
    let first = tip(&cp, &fan, "tip-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let t = &first.body;
    assert!(
        t["id"].as_str().is_some_and(|id| id.starts_with("txn_")),
        "{t}"
    );
    assert_eq!(
        (
            t["senderId"].clone(),
            t["creatorId"].clone(),
            t["amount"].clone()
        ),
        (json!("fan"), json!("star"), json!(999))
    );
    // 20 % of 999 rounds down to 199; the creator gets the rest.
    assert_eq!(
        (t["fee"].clone(), t["net"].clone()),
        (json!(199), json!(800))
    );
    assert_eq!(t["currency"], json!("USD"));
    assert_eq!(t["message"], json!("great set 🎶"));
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(4001));
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(800));
    // The creator hears it at once: the notification and their new earnings.
    let n = sio.event("star", "notification").await;
    assert_eq!(n["notification"]["type"], json!("payment.received"), "{n}");
    assert_eq!(
        n["notification"]["title"],
        json!("Payment received: a tip from Fan One")
    );
    assert_eq!(n["notification"]["body"], json!("great set 🎶"));
    assert_eq!(n["notification"]["data"]["tipId"], t["id"]);
    let e = sio.event("star", "earnings").await;
    assert_eq!(
        e,
        json!({"currency": "USD", "earnings": 800, "tipId": t["id"]})
    );
    let stored = cp.get("/v1/me/notifications", &star).await.expect(200).body;
    assert_eq!(stored["unreadCount"], json!(1), "{stored}");
    // The tip is one ledger transaction with the fee split; the webhook row has the tip.
    let txn = cp
        .get(
            &format!("/v1/transactions/{}", t["id"].as_str().unwrap_or("")),
            &key,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(txn["source"], json!("tip"));
    assert_eq!(
        txn["entries"],
        json!([{"account": "earnings:star", "amount": 800}, {"account": "platform", "amount": 199},
               {"account": "wallet:fan", "amount": -999}])
    );
    assert_eq!(webhook_events(&cp, "tip.created").await, vec![t.clone()]);

    // The same key again: the same tip, nothing moved; with another tip: refused.
    let again = tip(&cp, &fan, "tip-1", body.clone()).await;
    assert_eq!((again.status, &again.text), (201, &first.text));
    assert!(again.replayed);
    let other = tip(
        &cp,
        &fan,
        "tip-1",
        json!({"creatorId": "star", "amount": 5, "message": ""}),
    )
    .await;
    problem(&other, 422, "tip-1");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(4001));

    // Over the gateway: acked after the commit; a retry with the key gets the same ack.
    let event =
        json!({"creatorId": "star", "amount": 100, "message": "", "idempotencyKey": "sock-1"});
    let ack = sio.emit("fan", "send-tip", event.clone()).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    assert_eq!(
        (ack["tip"]["fee"].clone(), ack["tip"]["net"].clone()),
        (json!(20), json!(80))
    );
    let e = sio.event("star", "earnings").await;
    assert_eq!(e["earnings"], json!(880), "{e}");
    assert_eq!(sio.emit("fan", "send-tip", event).await, ack);
    // The REST key over the gateway answers the REST tip: one key, one tip, either transport.
    let mut cross = body.clone();
    cross["idempotencyKey"] = json!("tip-1");
    let ack = sio.emit("fan", "send-tip", cross).await;
    assert_eq!(ack["tip"], first.body, "{ack}");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(3901));
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(880));
    // Three devices of the fan send one tip twice each, all at once: it moves once.
    sio.connect("fan-2", &fan).await.expect("connects");
    sio.connect("fan-3", &fan).await.expect("connects");
    joined(&mut sio, &["fan-2", "fan-3"]).await;
    let event = json!({"creatorId": "star", "amount": 1, "idempotencyKey": "sock-2"});
    let burst: Vec<(&str, &str, Value)> = ["fan", "fan-2", "fan-3", "fan", "fan-2", "fan-3"]
        .into_iter()
        .map(|c| (c, "send-tip", event.clone()))
        .collect();
    let acks = sio.emit_all(&burst).await;
    assert!(acks.iter().all(|a| a == &acks[0]), "{acks:?}");
    assert_eq!(acks[0]["tip"]["amount"], json!(1), "{acks:?}");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(3900));
    assert_eq!(webhook_events(&cp, "tip.created").await.len(), 3);
    assert_eq!(
        metric(&cp, "onda_ledger_transactions_total{source=\"tip\"}").await,
        3.0
    );
    assert_eq!(
        metric(&cp, "onda_notifications_total{source=\"money\"}").await,
        3.0
    );
    assert_check_ok(&cp, &key, "the tips").await;
    cp.stop().await;
}

async fn bad_tips_are_refused_and_move_nothing(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 1000).await;
    // No key: a 400 that names the header.
    let r = send(
        &cp,
        (Method::POST, "/v1/me/tips"),
        &fan,
        None,
        Some(json!({"creatorId": "star", "amount": 10})),
    )
    .await;
    problem(&r, 400, "Idempotency-Key");
    // Amounts: zero, negative, fractional, above 10^12, beyond 64 bits, a string.
    for (i, amount) in [
        json!(0),
        json!(-5),
        json!(1.5),
        json!(1_000_000_000_001_i64),
        json!(1e30),
        json!("10"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = tip(
            &cp,
            &fan,
            &format!("bad-{i}"),
            json!({"creatorId": "star", "amount": amount}),
        )
        .await;
        problem(&r, 422, " ");
    }
    // A non-creator, oneself, a user of no one / of another tenant.
    cp.user_with_token(&key, "other-fan", "Other fan").await;
    let r = tip(
        &cp,
        &fan,
        "k1",
        json!({"creatorId": "other-fan", "amount": 10}),
    )
    .await;
    problem(&r, 422, "not a creator");
    let r = tip(&cp, &star, "k2", json!({"creatorId": "star", "amount": 10})).await;
    problem(&r, 422, "yourself");
    let (_, other_key) = cp.tenant_with_key("Elsewhere", "plan_premium").await;
    cp.call(
        Method::PUT,
        "/v1/users/their-star",
        Some(&other_key),
        Some(json!({"creator": true})),
    )
    .await
    .expect(201);
    let r = tip(
        &cp,
        &fan,
        "k3",
        json!({"creatorId": "their-star", "amount": 10}),
    )
    .await;
    problem(&r, 404, "their-star");
    // Under the creator's minimum (set by the tenant), a long message, more than the wallet.
    let put = cp
        .call(
            Method::PUT,
            "/v1/users/star",
            Some(&key),
            Some(json!({"display_name": "Star", "creator": true, "tip_minimum": 500})),
        )
        .await
        .expect(200);
    assert_eq!(put.body["tip_minimum"], json!(500));
    let r = tip(&cp, &fan, "k4", json!({"creatorId": "star", "amount": 499})).await;
    problem(&r, 422, "minimum tip of 500");
    cp.call(
        Method::PUT,
        "/v1/users/star",
        Some(&key),
        Some(json!({"creator": true, "tip_minimum": 0})),
    )
    .await
    .problem(422);
    let long = "é".repeat(201);
    let r = tip(
        &cp,
        &fan,
        "k5",
        json!({"creatorId": "star", "amount": 500, "message": long}),
    )
    .await;
    problem(&r, 422, "200");
    let r = tip(
        &cp,
        &fan,
        "k6",
        json!({"creatorId": "star", "amount": 1001}),
    )
    .await;
    problem(&r, 402, "holds less than the 1001");
    // A refused tip stored nothing: its key still works for the tip it meant.
    let ok = tip(&cp, &fan, "k6", json!({"creatorId": "star", "amount": 600})).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    // Blocks, either way.
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("star", &star).await.expect("connects");
    sio.connect("fan", &fan).await.expect("connects");
    let ack = sio
        .emit("star", "block-user", json!({"userId": "fan"}))
        .await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    let r = tip(&cp, &fan, "k7", json!({"creatorId": "star", "amount": 500})).await;
    problem(&r, 403, "does not accept tips from you");
    let ack = sio
        .emit(
            "fan",
            "send-tip",
            json!({"creatorId": "star", "amount": 500, "idempotencyKey": "k7"}),
        )
        .await;
    assert_eq!(ack["error"]["code"], json!("blocked"), "{ack}");
    sio.emit("star", "unblock-user", json!({"userId": "fan"}))
        .await;
    // The gateway refuses bad events with a code and a sentence.
    for (event, code) in [
        (
            json!({"creatorId": "star", "amount": 500}),
            "invalid_payload",
        ),
        (
            json!({"creatorId": "star", "amount": 500, "idempotencyKey": ""}),
            "invalid_payload",
        ),
        (
            json!({"creatorId": "star", "amount": 1.5, "idempotencyKey": "s1"}),
            "invalid_payload",
        ),
        (
            json!({"creatorId": "star", "amount": 401, "idempotencyKey": "s2"}),
            "invalid_payload",
        ),
        (
            json!({"creatorId": "star", "amount": 500, "idempotencyKey": "s3"}),
            "insufficient_funds",
        ),
        (
            json!({"creatorId": "nobody", "amount": 500, "idempotencyKey": "s4"}),
            "not_found",
        ),
    ] {
        let ack = sio.emit("fan", "send-tip", event.clone()).await;
        assert_eq!(ack["error"]["code"], json!(code), "{event}: {ack}");
        assert!(
            ack["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(' ')),
            "{ack}"
        );
    }
    // A tenant key is not a user; a plan without monetization refuses with a sentence.
    let r = tip(&cp, &key, "k8", json!({"creatorId": "star", "amount": 500})).await;
    problem(&r, 403, "user token");
    let (_, basic_key) = cp.tenant_with_key("Basic", "plan_standard").await;
    let basic_fan = cp.user_with_token(&basic_key, "fan", "Fan").await;
    let r = tip(
        &cp,
        &basic_fan,
        "k9",
        json!({"creatorId": "star", "amount": 500}),
    )
    .await;
    problem(&r, 403, "monetization");
    assert_eq!(
        r.body["limit"],
        json!("features.monetization"),
        "{}",
        r.text
    );
    // Nothing moved but the one good tip.
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(400));
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(480));
    assert_eq!(
        cp.list_all("/v1/transactions?source=tip", &key).await.len(),
        1
    );
    assert_eq!(
        metric(
            &cp,
            "onda_ledger_refusals_total{reason=\"insufficient_funds\"}"
        )
        .await,
        2.0
    );
    assert_check_ok(&cp, &key, "the refusals").await;
    cp.stop().await;
}

/// 50 tips of 30 at once from a wallet of 1000, each with its own key: exactly 33 succeed and
/// 17 are refused with 402; then ten copies of one tip at once with one key move it once.
async fn fifty_tips_at_once_never_overdraw(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, _) = tenant(&cp, 1000).await;
    let url = format!("{}/v1/me/tips", cp.url);
    let run = |keys: Vec<String>, amount: i64| {
        let mut set = tokio::task::JoinSet::new();
        for k in keys {
            let (http, url, fan) = (cp.http.clone(), url.clone(), fan.clone());
            set.spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(fan)
                    .header("idempotency-key", k)
                    .json(&json!({"creatorId": "star", "amount": amount}))
                    .send()
                    .await
                    .expect("tip");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            });
        }
        set.join_all()
    };
    let answers = run((0..50).map(|i| format!("burst-{i}")).collect(), 30).await;
    let ok = answers.iter().filter(|a| a.0 == 201).count();
    let refused = answers.iter().filter(|a| a.0 == 402).count();
    assert_eq!((ok, refused), (33, 17), "{answers:?}");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(10));
    // Each tip of 30 at 20 %: 6 to the platform, 24 to the creator.
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(33 * 24));
    let answers = run(vec!["same".to_string(); 10], 10).await;
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 201, "{answers:?}");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(0));
    assert_eq!(
        cp.list_all("/v1/transactions?source=tip", &key).await.len(),
        34
    );
    assert_check_ok(&cp, &key, "the burst").await;
    cp.stop().await;
}

async fn earnings_per_day_sum_the_ledger(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 10_000).await;
    let mut ids = Vec::new();
    for (i, amount) in [999, 1000, 55].into_iter().enumerate() {
        let r = tip(
            &cp,
            &fan,
            &format!("t{i}"),
            json!({"creatorId": "star", "amount": amount}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().expect("id").to_string());
    }
    // Half of the second tip refunded; an adjustment of earnings is no source's earnings.
    let r = send(
        &cp,
        (
            Method::POST,
            &format!("/v1/transactions/{}/refunds", ids[1]),
        ),
        &key,
        Some("r1"),
        Some(json!({"amount": 500, "reason": "half back"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = send(
        &cp,
        (Method::POST, "/v1/users/star/wallet/adjustments"),
        &key,
        Some("a1"),
        Some(json!({"account": "earnings", "amount": 7, "reason": "promo"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let report = cp
        .get("/v1/users/star/earnings", &key)
        .await
        .expect(200)
        .body;
    let days = report["days"].as_array().expect("days");
    assert_eq!(days.len(), 1, "{report}");
    // Gross 999 + 1000 + 55 - 500; fees 199 + 200 + 11 - 100 (the refund takes its fee back).
    let tips = json!({"gross": 1554, "fee": 310, "net": 1244, "transactions": 4});
    assert_eq!(days[0]["sources"], json!({ "tip": tips }), "{report}");
    assert_eq!(days[0]["total"], tips);
    assert_eq!(report["total"], tips);
    assert_eq!(report["currency"], json!("USD"));
    // Net earnings of the day plus the adjustment is what the earnings account holds.
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(1244 + 7));
    let today = days[0]["day"].as_str().expect("day").to_string();
    let same = cp
        .get(
            &format!("/v1/users/star/earnings?from={today}&to={today}"),
            &key,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(same["days"], report["days"]);
    let past = cp
        .get(
            "/v1/users/star/earnings?from=2020-01-01&to=2020-01-31",
            &key,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(past["days"], json!([]));
    assert_eq!(past["total"]["gross"], json!(0));
    // The creator's own view; a fan has no earnings; bad ranges say why.
    let mine = cp.get("/v1/me/earnings", &star).await.expect(200).body;
    assert_eq!(mine["days"], report["days"]);
    cp.get("/v1/me/earnings", &fan).await.problem(403);
    for bad in [
        "from=2026-02-30",
        "from=2026-12-02&to=2026-12-01",
        "from=2020-01-01&to=2026-01-01",
        "since=2026-01-01",
    ] {
        cp.get(&format!("/v1/users/star/earnings?{bad}"), &key)
            .await
            .problem(400);
    }
    cp.get("/v1/users/nobody/earnings", &key).await.problem(404);
    cp.stop().await;
}

async fn payouts_are_requested_and_decided_once(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 2000).await;
    cp.post(
        "/v1/webhooks",
        &key,
        json!({"url": "http://127.0.0.1:9/hook",
               "events": ["payout.requested", "payout.paid", "payout.rejected"]}),
    )
    .await
    .expect(201);
    let r = tip(
        &cp,
        &fan,
        "t1",
        json!({"creatorId": "star", "amount": 1250}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(1000));
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("star", &star).await.expect("connects");
    joined(&mut sio, &["star"]).await;
    let payouts = (Method::POST, "/v1/me/payouts");

    // Requests: more than the earnings, a fan, no key, bad amounts are refused.
    let r = send(
        &cp,
        payouts.clone(),
        &star,
        Some("p0"),
        Some(json!({"amount": 1001})),
    )
    .await;
    problem(
        &r,
        409,
        "earnings of user \"star\" holds less than the 1001",
    );
    let r = send(
        &cp,
        payouts.clone(),
        &fan,
        Some("p0"),
        Some(json!({"amount": 1})),
    )
    .await;
    problem(&r, 403, "not a creator");
    let r = send(
        &cp,
        payouts.clone(),
        &star,
        None,
        Some(json!({"amount": 1})),
    )
    .await;
    problem(&r, 400, "Idempotency-Key");
    for (i, amount) in [json!(0), json!(-1), json!(2.5)].into_iter().enumerate() {
        let r = send(
            &cp,
            payouts.clone(),
            &star,
            Some(&format!("bad-{i}")),
            Some(json!({ "amount": amount })),
        )
        .await;
        problem(&r, 422, " ");
    }
    let first = send(
        &cp,
        payouts.clone(),
        &star,
        Some("p1"),
        Some(json!({"amount": 600})),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let p1 = first.body.clone();
    assert_eq!(
        (
            p1["status"].clone(),
            p1["amount"].clone(),
            p1["user_id"].clone()
        ),
        (json!("requested"), json!(600), json!("star"))
    );
    let again = send(
        &cp,
        payouts.clone(),
        &star,
        Some("p1"),
        Some(json!({"amount": 600})),
    )
    .await;
    assert!(again.replayed && again.text == first.text, "{}", again.text);
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(400));
    assert_check_ok(&cp, &key, "the request").await;
    let second = send(
        &cp,
        payouts.clone(),
        &star,
        Some("p2"),
        Some(json!({"amount": 300})),
    )
    .await;
    assert_eq!(second.status, 201, "{}", second.text);
    let p2 = second.body.clone();
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(100));

    // The tenant lists them; the creator sees their own.
    let requested = cp.list_all("/v1/payouts?status=requested", &key).await;
    assert_eq!(requested, vec![p2.clone(), p1.clone()]);
    assert!(
        cp.list_all("/v1/payouts?status=paid", &key)
            .await
            .is_empty()
    );
    assert_eq!(cp.list_all("/v1/me/payouts", &star).await.len(), 2);
    cp.get("/v1/me/payouts?user_id=fan", &star)
        .await
        .problem(400);
    assert_eq!(
        cp.list_all("/v1/payouts?user_id=star&status=requested", &key)
            .await
            .len(),
        2
    );
    assert!(
        cp.list_all("/v1/payouts?user_id=fan", &key)
            .await
            .is_empty()
    );
    cp.get("/v1/payouts?status=lost", &key).await.problem(400);
    cp.get("/v1/payouts", &star).await.problem(403);

    // Paid, with the provider's reference: the amount leaves to external, once.
    let id1 = p1["id"].as_str().expect("id");
    let paid_path = format!("/v1/payouts/{id1}/paid");
    let paid = send(
        &cp,
        (Method::POST, &paid_path),
        &key,
        Some("d1"),
        Some(json!({"reference": "psp_tr_9"})),
    )
    .await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    assert_eq!(
        (paid.body["status"].clone(), paid.body["reference"].clone()),
        (json!("paid"), json!("psp_tr_9"))
    );
    let decision = paid.body["decision_transaction_id"].as_str().expect("txn");
    let txn = cp
        .get(&format!("/v1/transactions/{decision}"), &key)
        .await
        .expect(200)
        .body;
    assert_eq!(
        txn["entries"],
        json!([{"account": "external", "amount": 600}, {"account": "payouts_pending", "amount": -600}])
    );
    let n = sio.event("star", "notification").await;
    assert_eq!(n["notification"]["type"], json!("payout.processed"), "{n}");
    assert_check_ok(&cp, &key, "the payment").await;
    let replay = send(
        &cp,
        (Method::POST, &paid_path),
        &key,
        Some("d1"),
        Some(json!({"reference": "psp_tr_9"})),
    )
    .await;
    assert!(
        replay.replayed && replay.text == paid.text,
        "{}",
        replay.text
    );
    let twice = send(
        &cp,
        (Method::POST, &paid_path),
        &key,
        Some("d2"),
        Some(json!({"reference": "psp_tr_10"})),
    )
    .await;
    problem(&twice, 409, "decided once");
    let r = send(
        &cp,
        (Method::POST, &format!("/v1/payouts/{id1}/rejected")),
        &key,
        Some("d3"),
        Some(json!({"reason": "too late"})),
    )
    .await;
    problem(&r, 409, "already paid");

    // Paid and rejected at once for the second: exactly one decides it.
    let id2 = p2["id"].as_str().expect("id").to_string();
    let (reject_path, pay_path) = (
        format!("/v1/payouts/{id2}/rejected"),
        format!("/v1/payouts/{id2}/paid"),
    );
    let (a, b2) = tokio::join!(
        send(
            &cp,
            (Method::POST, &reject_path),
            &key,
            Some("d4"),
            Some(json!({"reason": "The bank account was closed."})),
        ),
        send(
            &cp,
            (Method::POST, &pay_path),
            &key,
            Some("d5"),
            Some(json!({"reference": "psp_tr_11"})),
        )
    );
    let mut codes = [a.status, b2.status];
    codes.sort_unstable();
    assert_eq!(codes, [200, 409], "{} / {}", a.text, b2.text);
    let won = if a.status == 200 { &a } else { &b2 };
    let earnings = if won.body["status"] == json!("rejected") {
        // Rejected: the amount returned to the earnings, as a new transaction.
        assert_eq!(won.body["reason"], json!("The bank account was closed."));
        400
    } else {
        100
    };
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(earnings));
    let n = sio.event("star", "notification").await;
    assert_eq!(n["notification"]["type"], json!("payout.processed"), "{n}");
    assert_check_ok(&cp, &key, "the second decision").await;
    // A third, rejected on its own: back to the earnings.
    let third = send(
        &cp,
        payouts.clone(),
        &star,
        Some("p3"),
        Some(json!({"amount": 50})),
    )
    .await;
    assert_eq!(third.status, 201, "{}", third.text);
    let id3 = third.body["id"].as_str().expect("id");
    let r = send(
        &cp,
        (Method::POST, &format!("/v1/payouts/{id3}/rejected")),
        &key,
        Some("d6"),
        Some(json!({"reason": "Verify your identity first."})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(earnings));
    assert_check_ok(&cp, &key, "the rejection").await;
    // Another tenant sees none of it; webhooks of every step are in the outbox.
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    let r = send(
        &cp,
        (Method::POST, &paid_path),
        &other,
        Some("x"),
        Some(json!({"reference": "r"})),
    )
    .await;
    problem(&r, 404, "no payout");
    assert!(cp.list_all("/v1/payouts", &other).await.is_empty());
    assert_eq!(webhook_events(&cp, "payout.requested").await.len(), 3);
    let decided = webhook_events(&cp, "payout.paid").await.len()
        + webhook_events(&cp, "payout.rejected").await.len();
    assert_eq!(decided, 3);
    assert_eq!(
        webhook_events(&cp, "payout.paid").await[0]["reference"],
        json!("psp_tr_9")
    );
    cp.stop().await;
}

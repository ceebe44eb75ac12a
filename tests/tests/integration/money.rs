//! The money API through the real server, on SQLite and PostgreSQL: tenant currency and
//! commission, credits with idempotency keys (missing, replayed, reused with another body), bad
//! amounts, wallets and earnings, adjustments, refunds of credits (partial, full, over, after the
//! wallet spent it), histories in JSON and CSV, the user's own view, 50 concurrent debits of one
//! wallet, and the metrics. The SIGKILL between commit and answer runs the real binary.

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::on_both_backends;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    tenant_currency_and_commission,
    credits_are_idempotent_and_amounts_checked,
    refunds_adjustments_and_histories,
    fifty_debits_at_once_through_the_api,
    a_retry_after_sigkill_answers_the_committed_result,
    a_purchase_killed_after_its_commit_is_done_once,
    a_tip_killed_after_its_commit_is_done_once,
);

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

async fn send(
    http: &reqwest::Client,
    url: String,
    token: &str,
    (method, key, body): (Method, Option<&str>, Option<Value>),
) -> Answer {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        body,
    }
}

async fn post_keyed(
    cp: &TestControlPlane,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> Answer {
    send(
        &cp.http,
        format!("{}{path}", cp.url),
        token,
        (Method::POST, Some(key), Some(body)),
    )
    .await
}

async fn balance(cp: &TestControlPlane, key: &str, user: &str) -> Value {
    cp.get(&format!("/v1/users/{user}/wallet"), key)
        .await
        .expect(200)
        .body
}

async fn tenant_currency_and_commission(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let t = cp
        .post(
            "/v1/tenants",
            &cp.admin,
            json!({"name": "Defaults", "plan_id": "plan_premium"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(
        (t["currency"].clone(), t["platform_fee_bps"].clone()),
        (json!("USD"), json!(2000))
    );
    let t = cp
        .post(
            "/v1/tenants",
            &cp.admin,
            json!({"name": "Euro", "plan_id": "plan_premium", "currency": "EUR", "platform_fee_bps": 1250}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(
        (t["currency"].clone(), t["platform_fee_bps"].clone()),
        (json!("EUR"), json!(1250))
    );
    for bad in [
        json!({"name": "X", "plan_id": "plan_premium", "currency": "eur"}),
        json!({"name": "X", "plan_id": "plan_premium", "currency": "EURO"}),
        json!({"name": "X", "plan_id": "plan_premium", "platform_fee_bps": 10001}),
    ] {
        cp.post("/v1/tenants", &cp.admin, bad).await.problem(422);
    }
    cp.post(
        "/v1/tenants",
        &cp.admin,
        json!({"name": "X", "plan_id": "plan_premium", "platform_fee_bps": -1}),
    )
    .await
    .problem(422);
    let id = t["id"].as_str().expect("id");
    let t = cp
        .patch(
            &format!("/v1/tenants/{id}"),
            &cp.admin,
            json!({"platform_fee_bps": 0, "currency": "GBP"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (t["currency"].clone(), t["platform_fee_bps"].clone()),
        (json!("GBP"), json!(0))
    );
    // Once the ledger has a transaction, its currency is fixed.
    let (tid, key) = cp.tenant_with_key("Fixed", "plan_premium").await;
    cp.user_with_token(&key, "fan", "Fan").await;
    post_keyed(
        &cp,
        "/v1/users/fan/wallet/credits",
        &key,
        "k1",
        json!({"amount": 100, "reference": "p"}),
    )
    .await;
    let r = cp
        .patch(
            &format!("/v1/tenants/{tid}"),
            &cp.admin,
            json!({"currency": "EUR"}),
        )
        .await
        .problem(409);
    assert!(r.text.contains("USD"), "{}", r.text);
    cp.patch(
        &format!("/v1/tenants/{tid}"),
        &cp.admin,
        json!({"currency": "USD", "platform_fee_bps": 500}),
    )
    .await
    .expect(200);
    cp.stop().await;
}

async fn credits_are_idempotent_and_amounts_checked(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Money", "plan_premium").await;
    cp.user_with_token(&key, "fan", "Fan").await;
    let path = "/v1/users/fan/wallet/credits";
    let body = json!({"amount": 1500, "reference": "psp_ch_1"});
    // No key: a 400 that names the header, and nothing moved.
    let r = send(
        &cp.http,
        format!("{}{path}", cp.url),
        &key,
        (Method::POST, None, Some(body.clone())),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("Idempotency-Key"), "{}", r.text);
    assert_eq!(balance(&cp, &key, "fan").await["balance"], json!(0));
    let first = post_keyed(&cp, path, &key, "credit-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["source"], json!("credit"));
    assert_eq!(first.body["currency"], json!("USD"));
    assert_eq!(
        first.body["entries"],
        json!([{"account": "external", "amount": -1500}, {"account": "wallet:fan", "amount": 1500}])
    );
    // The same key and body (keys in another order): the same answer, nothing moved twice.
    let again = post_keyed(
        &cp,
        path,
        &key,
        "credit-1",
        json!({"reference": "psp_ch_1", "amount": 1500}),
    )
    .await;
    assert_eq!((again.status, &again.text), (201, &first.text));
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(
        balance(&cp, &key, "fan").await,
        json!({"currency": "USD", "balance": 1500})
    );
    // The same key with another body, or on another route: 422 naming the conflict.
    let r = post_keyed(
        &cp,
        path,
        &key,
        "credit-1",
        json!({"amount": 1600, "reference": "psp_ch_1"}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("credit-1") && r.text.contains("different request"),
        "{}",
        r.text
    );
    let r = post_keyed(
        &cp,
        "/v1/users/fan/wallet/adjustments",
        &key,
        "credit-1",
        json!({"account": "wallet", "amount": 5, "reason": "x"}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // Keys are per tenant: another tenant may use the same one.
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    cp.user_with_token(&other, "fan", "Other fan").await;
    assert_eq!(
        post_keyed(&cp, path, &other, "credit-1", body.clone())
            .await
            .status,
        201
    );
    // Bad amounts: zero, negative, fractional, above 10^12, beyond 64 bits, a string.
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
        let r = post_keyed(
            &cp,
            path,
            &key,
            &format!("bad-{i}"),
            json!({"amount": amount, "reference": "r"}),
        )
        .await;
        assert_eq!(r.status, 422, "{amount}: {}", r.text);
        assert_eq!(r.body["status"], json!(422), "{}", r.text);
    }
    let r = post_keyed(
        &cp,
        path,
        &key,
        "no-ref",
        json!({"amount": 5, "reference": " "}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // A user that does not exist (or is another tenant's).
    let r = post_keyed(
        &cp,
        "/v1/users/nobody/wallet/credits",
        &key,
        "nobody",
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(balance(&cp, &key, "fan").await["balance"], json!(1500));
    // The refusals and the transactions are counted.
    let m = cp.call(Method::GET, "/metrics", None, None).await.text;
    assert!(
        m.contains("onda_ledger_transactions_total{source=\"credit\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("onda_ledger_refusals_total{reason=\"idempotency_conflict\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("onda_ledger_refusals_total{reason=\"invalid_amount\"} 3"),
        "{m}"
    );
    cp.stop().await;
}

async fn refunds_adjustments_and_histories(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Money", "plan_premium").await;
    let fan_token = cp.user_with_token(&key, "fan", "Fan").await;
    cp.call(
        Method::PUT,
        "/v1/users/star",
        Some(&key),
        Some(json!({"display_name": "Star", "creator": true})),
    )
    .await
    .expect(201);
    let credit = post_keyed(
        &cp,
        "/v1/users/fan/wallet/credits",
        &key,
        "c1",
        json!({"amount": 1000, "reference": "p1"}),
    )
    .await;
    assert_eq!(credit.status, 201, "{}", credit.text);
    let cid = credit.body["id"].as_str().expect("id").to_string();
    let refunds = format!("/v1/transactions/{cid}/refunds");
    // A partial refund, then more than remains, then the rest.
    let r = post_keyed(
        &cp,
        &refunds,
        &key,
        "r1",
        json!({"amount": 300, "reason": "partial"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (r.body["source"].clone(), r.body["refund_of"].clone()),
        (json!("refund"), json!(cid))
    );
    let r = post_keyed(
        &cp,
        &refunds,
        &key,
        "r2",
        json!({"amount": 701, "reason": "too much"}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("700"), "{}", r.text);
    // The wallet spends 500 of it (an adjustment down): the rest can no longer come back.
    let r = post_keyed(
        &cp,
        "/v1/users/fan/wallet/adjustments",
        &key,
        "a1",
        json!({"account": "wallet", "amount": -500, "reason": "spent"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = post_keyed(&cp, &refunds, &key, "r3", json!({"reason": "the rest"})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("wallet of user \"fan\" holds less than the 700"),
        "{detail}"
    );
    assert_eq!(balance(&cp, &key, "fan").await["balance"], json!(200));
    let r = post_keyed(
        &cp,
        &refunds,
        &key,
        "r4",
        json!({"amount": 200, "reason": "what it holds"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(balance(&cp, &key, "fan").await["balance"], json!(0));
    // Adjustments never go below zero; earnings only for creators.
    let r = post_keyed(
        &cp,
        "/v1/users/fan/wallet/adjustments",
        &key,
        "a2",
        json!({"account": "wallet", "amount": -1, "reason": "x"}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = post_keyed(
        &cp,
        "/v1/users/fan/wallet/adjustments",
        &key,
        "a3",
        json!({"account": "earnings", "amount": 5, "reason": "x"}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = post_keyed(
        &cp,
        "/v1/users/star/wallet/adjustments",
        &key,
        "a4",
        json!({"account": "earnings", "amount": 250, "reason": "promo"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        balance(&cp, &key, "star").await,
        json!({"currency": "USD", "balance": 0, "earnings": 250})
    );
    // A refund of an adjustment is refused with a sentence; another tenant's id is a 404.
    let aid = r.body["id"].as_str().expect("id").to_string();
    let r = post_keyed(
        &cp,
        &format!("/v1/transactions/{aid}/refunds"),
        &key,
        "r5",
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    // The fan's history, newest first, paged.
    let items = cp.list_all("/v1/users/fan/transactions", &key).await;
    let kinds: Vec<&str> = items
        .iter()
        .map(|t| t["source"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["refund", "adjustment", "refund", "credit"]);
    let page = cp
        .get("/v1/users/fan/transactions?limit=3", &key)
        .await
        .expect(200)
        .body;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3));
    let next = page["next_cursor"].as_str().expect("cursor");
    let rest = cp
        .get(
            &format!("/v1/users/fan/transactions?limit=3&cursor={next}"),
            &key,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(rest["items"][0]["id"], json!(cid));
    // The tenant's list, filtered by source and time; CSV by Accept and by format.
    let refunds_only = cp.list_all("/v1/transactions?source=refund", &key).await;
    assert_eq!(refunds_only.len(), 2);
    let all = cp.list_all("/v1/transactions", &key).await;
    assert_eq!(all.len(), 5);
    assert!(
        cp.list_all("/v1/transactions?since=2999-01-01T00:00:00Z", &key)
            .await
            .is_empty()
    );
    cp.get("/v1/transactions?since=yesterday", &key)
        .await
        .problem(400);
    let csv = send(
        &cp.http,
        format!("{}/v1/transactions", cp.url),
        &key,
        (Method::GET, None, None),
    )
    .await;
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/json")
    );
    let csv = cp
        .http
        .get(format!("{}/v1/users/fan/transactions", cp.url))
        .bearer_auth(&key)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv");
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let text = csv.text().await.expect("text");
    let mut rows = ::csv::Reader::from_reader(text.as_bytes());
    let records: Vec<::csv::StringRecord> = rows.records().map(|r| r.expect("row")).collect();
    assert_eq!(records.len(), 4, "{text}");
    assert_eq!(&records[3][2], "credit");
    assert_eq!(&records[3][5], "1000");
    assert_eq!(&records[3][10], "external -1000; wallet:fan 1000");
    let by_format = cp
        .get("/v1/transactions?format=csv&source=credit", &key)
        .await
        .expect(200);
    assert_eq!(by_format.text.lines().count(), 2, "{}", by_format.text);
    // The kept balances agree with the entries.
    let check = cp.get("/v1/ledger/check", &key).await.expect(200).body;
    assert_eq!(
        check,
        json!({"ok": true, "transactions": 5, "balance_mismatches": [],
               "unbalanced_transactions": [], "negative_accounts": []})
    );
    // The fan's own view with a user token; the tenant key cannot use it, the token cannot use
    // the tenant's routes.
    let mine = cp.get("/v1/me/wallet", &fan_token).await.expect(200).body;
    assert_eq!(mine, json!({"currency": "USD", "balance": 0}));
    let mine = cp.list_all("/v1/me/transactions", &fan_token).await;
    assert_eq!(mine, items);
    cp.get("/v1/me/wallet", &key).await.problem(403);
    cp.get("/v1/users/fan/wallet", &fan_token)
        .await
        .problem(403);
    cp.get("/v1/transactions", &fan_token).await.problem(403);
    // Another tenant's key and user token see nothing of it.
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    let other_fan = cp.user_with_token(&other, "fan", "Someone else").await;
    cp.get(&format!("/v1/transactions/{cid}"), &other)
        .await
        .problem(404);
    assert!(cp.list_all("/v1/transactions", &other).await.is_empty());
    assert!(
        cp.list_all("/v1/me/transactions", &other_fan)
            .await
            .is_empty()
    );
    assert_eq!(
        cp.get("/v1/me/wallet", &other_fan).await.expect(200).body["balance"],
        json!(0)
    );
    cp.stop().await;
}

/// 50 debits of 30 at once from a wallet of 1000 through the API: exactly 33 succeed, the rest
/// are refused with 409, and the wallet holds 10. Then ten copies of one credit at once with one
/// key move it once, and eight refunds of it at once refund it once.
async fn fifty_debits_at_once_through_the_api(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Burst", "plan_premium").await;
    cp.user_with_token(&key, "fan", "Fan").await;
    let r = post_keyed(
        &cp,
        "/v1/users/fan/wallet/credits",
        &key,
        "c",
        json!({"amount": 1000, "reference": "p"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let url = format!("{}/v1/users/fan/wallet/adjustments", cp.url);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (http, url, key) = (cp.http.clone(), url.clone(), key.clone());
        set.spawn(async move {
            let body = json!({"account": "wallet", "amount": -30, "reason": "spend"});
            send(
                &http,
                url,
                &key,
                (Method::POST, Some(&format!("spend-{i}")), Some(body)),
            )
            .await
            .status
        });
    }
    let codes = set.join_all().await;
    let ok = codes.iter().filter(|c| **c == 201).count();
    let refused = codes.iter().filter(|c| **c == 409).count();
    assert_eq!((ok, refused), (33, 17), "{codes:?}");
    assert_eq!(balance(&cp, &key, "fan").await["balance"], json!(10));
    // Ten retries of one credit at once, with the same key: one movement, one answer for all.
    let url = format!("{}/v1/users/fan/wallet/credits", cp.url);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (http, url, key) = (cp.http.clone(), url.clone(), key.clone());
        set.spawn(async move {
            let body = json!({"amount": 70, "reference": "p2"});
            let a = send(&http, url, &key, (Method::POST, Some("same"), Some(body))).await;
            (a.status, a.text)
        });
    }
    let answers = set.join_all().await;
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 201, "{answers:?}");
    assert_eq!(balance(&cp, &key, "fan").await["balance"], json!(80));
    // Eight full refunds of that credit at once, with different keys: the wallet could pay
    // for more than one (it holds 80 of 70), but only one refund of it exists.
    let id = answers[0]
        .1
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next());
    let url = format!("{}/v1/transactions/{}/refunds", cp.url, id.expect("id"));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (http, url, key) = (cp.http.clone(), url.clone(), key.clone());
        set.spawn(async move {
            let body = json!({"reason": "duplicate charge"});
            send(
                &http,
                url,
                &key,
                (Method::POST, Some(&format!("refund-{i}")), Some(body)),
            )
            .await
            .status
        });
    }
    let mut codes = set.join_all().await;
    codes.sort_unstable();
    assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(balance(&cp, &key, "fan").await["balance"], json!(10));
    cp.stop().await;
}

/// A control plane that holds each answer after its commit (`ONDA_LEDGER_ANSWER_DELAY_MS`)
/// and a tenant with the end user `fan`: (fixture, tenant key).
async fn held_answers(b: Backend, tenant: &str) -> Option<(ClusterFixture, String)> {
    let fx = ClusterFixture::start_on(ClusterSpec {
        backend: b,
        env: &[("ONDA_LEDGER_ANSWER_DELAY_MS", "600000")],
        ..ClusterSpec::default()
    })
    .await?;
    let key = fx.cp.tenant_key(tenant).await;
    let (s, _) = fx
        .cp
        .tenant_call(
            &key,
            Method::PUT,
            "/v1/users/fan",
            Some(json!({"display_name": "Fan"})),
        )
        .await;
    assert_eq!(s, 201);
    Some((fx, key))
}

/// Creator `star`, and `fan`'s token once 1000 is credited to the fan's wallet. Every answer
/// is held, the credit's too: its commit is what the payment after it needs (the request dies
/// with the process).
async fn creator_and_funded_fan(fx: &ClusterFixture, key: &str) -> String {
    let cp = &fx.cp;
    let (s, _) = cp
        .tenant_call(
            key,
            Method::PUT,
            "/v1/users/star",
            Some(json!({"display_name": "Star", "creator": true})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, t) = cp
        .tenant_call(key, Method::POST, "/v1/users/fan/tokens", Some(json!({})))
        .await;
    assert_eq!(s, 201, "{t}");
    let fan = t["token"].as_str().expect("token").to_string();
    let credit = cp
        .http
        .post(format!("{}/v1/users/fan/wallet/credits", cp.api))
        .bearer_auth(key)
        .header("idempotency-key", "credit-fan")
        .json(&json!({"amount": 1000, "reference": "psp_1"}))
        .send();
    let _held = tokio::spawn(credit);
    committed(fx, "credit-fan").await;
    fan
}

/// Waits until the answer under the idempotency key `idem` is committed (a 2xx stored).
async fn committed(fx: &ClusterFixture, idem: &str) {
    sqlx::any::install_default_drivers();
    let db_url = fx.db.url.clone();
    onda_tests::wait_for("the commit", Duration::from_secs(20), || {
        let (db_url, idem) = (db_url.clone(), idem.to_string());
        async move {
            use sqlx::Connection as _;
            let mut c = sqlx::AnyConnection::connect(&db_url).await.ok()?;
            let row: Option<(i64,)> =
                sqlx::query_as("SELECT status FROM idempotency_keys WHERE idem_key = $1")
                    .bind(idem)
                    .fetch_optional(&mut c)
                    .await
                    .ok()?;
            let _ = c.close().await;
            row.filter(|(s,)| (200..300).contains(s)).map(|_| ())
        }
    })
    .await;
}

/// Sends `POST path` with `body` under the idempotency key `idem` and `token`, waits until the
/// database holds its committed answer while the request is still pending, kills the control
/// plane with SIGKILL, restarts it, and retries with the same key: the retry's answer, which
/// must be the stored one (replayed).
async fn killed_between_commit_and_answer(
    fx: &mut ClusterFixture,
    token: &str,
    (path, idem, body): (&str, &str, &Value),
) -> Answer {
    let http = fx.cp.http.clone();
    let pending = tokio::spawn({
        let url = format!("{}{path}", fx.cp.api);
        let (http, token, body, idem) = (
            http.clone(),
            token.to_string(),
            body.clone(),
            idem.to_string(),
        );
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("idempotency-key", idem)
                .json(&body)
                .send()
                .await
        }
    });
    // Committed (the key's answer is stored) but not answered: the request is still pending.
    committed(fx, idem).await;
    assert!(
        !pending.is_finished(),
        "the answer was held after the commit"
    );
    fx.kill_cp();
    let lost = pending.await.expect("task");
    assert!(
        lost.is_err(),
        "no answer came from the killed process: {lost:?}"
    );
    fx.restart_cp().await;
    let retry = send(
        &http,
        format!("{}{path}", fx.cp.api),
        token,
        (Method::POST, Some(idem), Some(body.clone())),
    )
    .await;
    assert!((200..300).contains(&retry.status), "{}", retry.text);
    assert_eq!(
        retry
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "the retry answers the stored result"
    );
    retry
}

/// A credit killed between its commit and its answer is answered by the retry, once.
async fn a_retry_after_sigkill_answers_the_committed_result(b: Backend) {
    let Some((mut fx, key)) = held_answers(b, "Killed").await else {
        return;
    };
    let body = json!({"amount": 4200, "reference": "psp_killed"});
    let path = "/v1/users/fan/wallet/credits";
    let retry = killed_between_commit_and_answer(&mut fx, &key, (path, "killed-1", &body)).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.body["amount"], json!(4200));
    let http = fx.cp.http.clone();
    let url = format!("{}{path}", fx.cp.api);
    let (_, wallet) = fx
        .cp
        .tenant_call(&key, Method::GET, "/v1/users/fan/wallet", None)
        .await;
    assert_eq!(
        wallet["balance"],
        json!(4200),
        "credited exactly once: {wallet}"
    );
    let (_, list) = fx
        .cp
        .tenant_call(&key, Method::GET, "/v1/transactions", None)
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["items"][0], retry.body);
    // The same key with another body is still a conflict after the restart.
    let other = send(
        &http,
        url,
        &key,
        (
            Method::POST,
            Some("killed-1"),
            Some(json!({"amount": 1, "reference": "x"})),
        ),
    )
    .await;
    assert_eq!(other.status, 422, "{}", other.text);
}

/// A pay-per-view purchase killed between its commit and its answer: the retry with the key
/// answers the purchase, the fan paid once, and playback opens.
async fn a_purchase_killed_after_its_commit_is_done_once(b: Backend) {
    let Some((mut fx, key)) = held_answers(b, "Killed buying").await else {
        return;
    };
    let fan = creator_and_funded_fan(&fx, &key).await;
    let cp = &fx.cp;
    let (s, stream) = cp
        .tenant_call(
            &key,
            Method::POST,
            "/v1/streams",
            Some(json!({"name": "Show", "access": "pay_per_view", "creator_id": "star", "price": 700})),
        )
        .await;
    assert_eq!(s, 201, "{stream}");
    let id = stream["id"].as_str().expect("id").to_string();
    let path = format!("/v1/me/streams/{id}/purchase");
    let retry = killed_between_commit_and_answer(&mut fx, &fan, (&path, "buy-1", &json!({}))).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    let cp = &fx.cp;
    let (_, wallet) = cp
        .tenant_call(&key, Method::GET, "/v1/users/fan/wallet", None)
        .await;
    assert_eq!(wallet["balance"], json!(300), "paid exactly once: {wallet}");
    let again = send(
        &cp.http,
        format!("{}{path}", cp.api),
        &fan,
        (Method::POST, Some("buy-2"), None),
    )
    .await;
    assert_eq!(again.status, 409, "bought already: {}", again.text);
    let playback = send(
        &cp.http,
        format!("{}/v1/me/streams/{id}/playback", cp.api),
        &fan,
        (Method::POST, None, None),
    )
    .await;
    assert_eq!(playback.status, 201, "{}", playback.text);
    let (_, check) = cp
        .tenant_call(&key, Method::GET, "/v1/ledger/check", None)
        .await;
    assert_eq!(check["ok"], json!(true), "{check}");
}

/// A tip (written by the tips' batch writer) killed between its commit and its answer: the
/// retry with the key answers the tip, the fan paid once and the creator earned once.
async fn a_tip_killed_after_its_commit_is_done_once(b: Backend) {
    let Some((mut fx, key)) = held_answers(b, "Killed tipping").await else {
        return;
    };
    let fan = creator_and_funded_fan(&fx, &key).await;
    let (_, me) = fx.cp.tenant_call(&key, Method::GET, "/v1/me", None).await;
    let fee_bps = me["tenant"]["platform_fee_bps"].as_i64().expect("fee");
    let body = json!({"creatorId": "star", "amount": 250, "message": "encore"});
    let retry =
        killed_between_commit_and_answer(&mut fx, &fan, ("/v1/me/tips", "tip-1", &body)).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.body["amount"], json!(250), "{}", retry.text);
    let cp = &fx.cp;
    let (_, wallet) = cp
        .tenant_call(&key, Method::GET, "/v1/users/fan/wallet", None)
        .await;
    assert_eq!(wallet["balance"], json!(750), "paid exactly once: {wallet}");
    let (_, star) = cp
        .tenant_call(&key, Method::GET, "/v1/users/star/wallet", None)
        .await;
    assert_eq!(
        star["earnings"],
        json!(250 - 250 * fee_bps / 10_000),
        "earned exactly once: {star}"
    );
    let (_, check) = cp
        .tenant_call(&key, Method::GET, "/v1/ledger/check", None)
        .await;
    assert_eq!(check["ok"], json!(true), "{check}");
}

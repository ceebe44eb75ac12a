//! The panel API against a real database: every test runs once on SQLite and once on
//! PostgreSQL (a fresh database each), through real HTTP on 127.0.0.1.

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    seed_plans_and_plan_crud,
    pagination,
    tenants_keys_and_revocation,
    suspended_tenant_reads_but_cannot_write,
    station_crud,
    plan_limits_refuse_and_change_nothing,
    concurrent_creates_respect_max_stations,
    another_tenants_objects_answer_404_on_every_route,
    bad_input_is_refused_and_changes_nothing,
    openapi_lists_every_served_route,
    health_readiness_and_metrics,
    control_characters_are_refused_never_a_500,
    concurrent_updates_never_undo_a_suspension,
    streamer_accounts,
    playlists_and_schedules,
);

fn mp3(path: &str, kbps: u32) -> Value {
    json!({"path": path, "format": "mp3", "bitrate_kbps": kbps})
}

async fn seed_plans_and_plan_crud(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let a = &cp.admin;
    let plans = cp.list_all("/v1/plans", a).await;
    let by_name = |n: &str| plans.iter().find(|p| p["name"] == n).cloned().expect(n);
    let basic = by_name("Basic");
    assert_eq!(basic["limits"]["max_stations"], 1);
    assert_eq!(basic["prices"]["included_gb"], 250);
    assert_eq!(basic["prices"]["included_listener_hours"], 10_000);
    assert_eq!(basic["limits"]["max_bitrate_kbps"], 64);
    assert_eq!(basic["limits"]["max_listeners_per_station"], 50);
    assert_eq!(basic["limits"]["storage_bytes"], 10_000_000_000_u64);
    let standard = by_name("Standard");
    assert_eq!(standard["limits"]["max_mounts_per_station"], 2);
    assert_eq!(standard["limits"]["max_bitrate_kbps"], 128);
    assert_eq!(standard["limits"]["max_listeners_per_station"], 100);
    assert_eq!(standard["limits"]["storage_bytes"], 30_000_000_000_u64);
    assert_eq!(standard["features"]["scheduling"], true);
    let premium = by_name("Premium");
    assert_eq!(premium["limits"]["max_mounts_per_station"], 3);
    assert_eq!(premium["limits"]["max_bitrate_kbps"], 320);
    assert_eq!(premium["limits"]["max_listeners_per_station"], 200);
    assert_eq!(premium["limits"]["storage_bytes"], 50_000_000_000_u64);
    // One message attachment: 25 MiB on the plan with messaging, 10 MiB on the others.
    assert_eq!(premium["limits"]["attachment_bytes"], 25 * 1024 * 1024);
    assert_eq!(basic["limits"]["attachment_bytes"], 10 * 1024 * 1024);
    assert_eq!(
        premium["features"],
        json!({"autodj": true, "scheduling": true, "hls": true, "live_video": true, "messaging": true,
               "monetization": true, "live_chat": true, "calls": true, "requests": true})
    );
    // Song requests come with Standard and Premium.
    assert_eq!(standard["features"]["requests"], true);
    assert_eq!(basic["features"]["requests"], false);
    // Premium includes 10,000 payments a month, then 5.00 per 1000.
    assert_eq!(
        (
            &premium["prices"]["included_transactions"],
            &premium["prices"]["overage_per_1000_transactions_micros"]
        ),
        (&json!(10_000), &json!(5_000_000))
    );
    assert_eq!(basic["prices"]["included_transactions"], 0);
    // And 1,000 call minutes, then 20.00 per 1000.
    assert_eq!(
        (
            &premium["prices"]["included_call_minutes"],
            &premium["prices"]["overage_per_1000_call_minutes_micros"]
        ),
        (&json!(1000), &json!(20_000_000))
    );
    // And 100 GB relayed by TURN, then 0.50 per GB.
    assert_eq!(
        (
            &premium["prices"]["included_turn_gb"],
            &premium["prices"]["overage_per_turn_gb_micros"]
        ),
        (&json!(100), &json!(500_000))
    );

    let body = json!({
        "name": "Pro",
        "limits": {"max_stations": 3, "max_mounts_per_station": 2, "allowed_formats": ["mp3", "opus"],
                   "max_bitrate_kbps": 192, "max_listeners_per_station": 500, "storage_bytes": 1000,
                   "max_live_streams": 1},
        "features": {"autodj": true},
        "prices": {"currency": "EUR", "monthly_micros": 12_500_000, "overage_per_gb_micros": 10_000,
                   "overage_per_listener_hour_micros": 500}
    });
    let created = cp.post("/v1/plans", a, body.clone()).await.expect(201).body;
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["features"]["scheduling"], false);
    assert_eq!(
        created["prices"]["included_gb"], 0,
        "allowances default to none"
    );
    assert_eq!(
        created["limits"]["attachment_bytes"],
        10 * 1024 * 1024,
        "a plan that does not say allows 10 MiB attachments"
    );
    assert_eq!(
        cp.get(&format!("/v1/plans/{id}"), a).await.expect(200).body,
        created
    );
    cp.post("/v1/plans", a, body).await.problem(409);

    let patched = cp
        .patch(
            &format!("/v1/plans/{id}"),
            a,
            json!({"limits": {"max_stations": 4}, "prices": {"monthly_micros": 1, "included_gb": 7}}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["prices"]["included_gb"], 7);
    assert_eq!(patched["prices"]["included_listener_hours"], 0);
    cp.patch(
        &format!("/v1/plans/{id}"),
        a,
        json!({"prices": {"included_listener_hours": 2_000_000_000_u64}}),
    )
    .await
    .problem(422);
    assert_eq!(patched["limits"]["max_stations"], 4);
    assert_eq!(
        patched["limits"]["max_bitrate_kbps"], 192,
        "untouched limits stay"
    );
    assert_eq!(patched["prices"]["monthly_micros"], 1);
    assert_eq!(patched["prices"]["currency"], "EUR");
    cp.patch(&format!("/v1/plans/{id}"), a, json!({"name": "Basic"}))
        .await
        .problem(409);

    // A plan in use cannot be deleted; an unused one can.
    let (_, _) = cp.tenant_with_key("On Pro", &id).await;
    cp.delete(&format!("/v1/plans/{id}"), a).await.problem(409);
    let spare = cp.get("/v1/plans/plan_standard", a).await.expect(200).body;
    assert_eq!(spare["name"], "Standard");
    cp.delete("/v1/plans/plan_standard", a).await.expect(204);
    cp.get("/v1/plans/plan_standard", a).await.problem(404);
    cp.delete("/v1/plans/plan_standard", a).await.problem(404);
    cp.stop().await;
}

async fn pagination(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let a = &cp.admin;
    for i in 0..7 {
        cp.post(
            "/v1/tenants",
            a,
            json!({"name": format!("T{i}"), "plan_id": "plan_basic"}),
        )
        .await
        .expect(201);
    }
    let first = cp.get("/v1/tenants?limit=3", a).await.expect(200).body;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3));
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    let second = cp
        .get(&format!("/v1/tenants?limit=3&cursor={cursor}"), a)
        .await
        .expect(200)
        .body;
    assert_eq!(second["items"].as_array().map(Vec::len), Some(3));
    assert!(second["items"][0]["id"].as_str() > first["items"][2]["id"].as_str());
    let all = cp.list_all("/v1/tenants", a).await;
    assert_eq!(all.len(), 7);
    let mut ids: Vec<&str> = all.iter().filter_map(|t| t["id"].as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 7, "no item twice across pages");
    let exact = cp.get("/v1/tenants?limit=7", a).await.expect(200).body;
    assert!(
        exact["next_cursor"].is_null(),
        "a page that ends the list has no cursor"
    );
    cp.get("/v1/tenants?limit=0", a).await.problem(400);
    cp.get("/v1/tenants?limit=101", a).await.problem(400);
    cp.get("/v1/tenants?limit=abc", a).await.problem(400);
    cp.get("/v1/tenants?page=2", a).await.problem(400);
    cp.stop().await;
}

async fn tenants_keys_and_revocation(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let a = &cp.admin;
    cp.post(
        "/v1/tenants",
        a,
        json!({"name": "X", "plan_id": "plan_nope"}),
    )
    .await
    .problem(422);
    cp.post(
        "/v1/tenants",
        a,
        json!({"name": "X", "plan_id": "plan_basic", "email": "not-an-email"}),
    )
    .await
    .problem(422);
    let t = cp
        .post(
            "/v1/tenants",
            a,
            json!({"name": "Rock FM", "plan_id": "plan_basic", "email": "ops@rock.example"}),
        )
        .await
        .expect(201)
        .body;
    let tid = t["id"].as_str().expect("id").to_string();
    assert_eq!(t["status"], "active");
    let t2 = cp
        .patch(
            &format!("/v1/tenants/{tid}"),
            a,
            json!({"plan_id": "plan_standard", "name": "Rock FM 2"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(t2["plan_id"], "plan_standard");
    assert_eq!(t2["email"], "ops@rock.example");
    cp.patch(
        &format!("/v1/tenants/{tid}"),
        a,
        json!({"plan_id": "plan_nope"}),
    )
    .await
    .problem(422);

    let created = cp
        .post(
            &format!("/v1/tenants/{tid}/api-keys"),
            a,
            json!({"name": "website"}),
        )
        .await
        .expect(201)
        .body;
    let secret = created["secret"].as_str().expect("secret").to_string();
    let key_id = created["id"].as_str().expect("id").to_string();
    assert!(secret.starts_with(created["prefix"].as_str().expect("prefix")));
    let listed = cp.list_all(&format!("/v1/tenants/{tid}/api-keys"), a).await;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once only"
    );
    assert!(!listed[0].to_string().contains(&secret));

    let me = cp.get("/v1/me", &secret).await.expect(200).body;
    assert_eq!(me["role"], "tenant");
    assert_eq!(me["tenant"]["id"], json!(tid));
    assert_eq!(me["plan"]["id"], "plan_standard");
    assert_eq!(cp.get("/v1/me", a).await.expect(200).body["role"], "admin");

    let revoked = cp
        .delete(&format!("/v1/tenants/{tid}/api-keys/{key_id}"), a)
        .await
        .expect(200)
        .body;
    assert!(revoked["revoked_at"].is_string());
    let r = cp.get("/v1/me", &secret).await.problem(401);
    assert!(r.text.contains("revoked"), "{}", r.text);
    cp.delete(&format!("/v1/tenants/{tid}/api-keys/key_nope"), a)
        .await
        .problem(404);

    // Missing and malformed credentials.
    cp.call(Method::GET, "/v1/me", None, None)
        .await
        .problem(401);
    cp.get("/v1/me", "not-a-key").await.problem(401);
    let r = cp.raw(Method::GET, "/v1/me", "", None, Vec::new()).await;
    assert_eq!(r.status, 401);

    // A tenant with stations cannot be deleted; without, it can (keys go with it).
    let (tid2, key2) = cp.tenant_with_key("Jazz", "plan_basic").await;
    let s = cp
        .post(
            "/v1/stations",
            &key2,
            json!({"name": "Jazz 1", "mounts": [mp3("/jazz", 64)]}),
        )
        .await
        .expect(201)
        .body;
    cp.delete(&format!("/v1/tenants/{tid2}"), a)
        .await
        .problem(409);
    cp.delete(
        &format!("/v1/stations/{}", s["id"].as_str().expect("id")),
        &key2,
    )
    .await
    .expect(204);
    cp.delete(&format!("/v1/tenants/{tid2}"), a)
        .await
        .expect(204);
    cp.get(&format!("/v1/tenants/{tid2}"), a).await.problem(404);
    cp.get("/v1/me", &key2).await.problem(401);
    cp.stop().await;
}

async fn suspended_tenant_reads_but_cannot_write(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let a = &cp.admin;
    let (tid, key) = cp.tenant_with_key("Sleepy", "plan_standard").await;
    let s = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "S1", "mounts": [mp3("/a", 64)]}),
        )
        .await
        .expect(201)
        .body;
    let sid = s["id"].as_str().expect("id");
    let t = cp
        .post(&format!("/v1/tenants/{tid}/suspend"), a, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(t["status"], "suspended");
    cp.get(&format!("/v1/stations/{sid}"), &key)
        .await
        .expect(200);
    let r = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "S2", "mounts": [mp3("/b", 64)]}),
        )
        .await
        .problem(403);
    assert!(r.text.contains("suspended"), "{}", r.text);
    cp.patch(&format!("/v1/stations/{sid}"), &key, json!({"name": "new"}))
        .await
        .problem(403);
    cp.delete(&format!("/v1/stations/{sid}"), &key)
        .await
        .problem(403);
    assert_eq!(cp.list_all("/v1/stations", &key).await.len(), 1);
    let t = cp
        .post(&format!("/v1/tenants/{tid}/resume"), a, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(t["status"], "active");
    cp.patch(&format!("/v1/stations/{sid}"), &key, json!({"name": "new"}))
        .await
        .expect(200);
    cp.post("/v1/tenants/tnt_nope/suspend", a, json!({}))
        .await
        .problem(404);
    cp.stop().await;
}

async fn station_crud(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (tid, key) = cp.tenant_with_key("Crud", "plan_premium").await;
    let s = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "Radio Ñu 101!", "genre": "Jazz", "autodj_enabled": true,
                   "mounts": [mp3("/hi.mp3", 320), {"path": "/lo.aac", "format": "aac", "bitrate_kbps": 48}]}),
        )
        .await
        .expect(201)
        .body;
    let sid = s["id"].as_str().expect("id").to_string();
    assert_eq!(s["tenant_id"], json!(tid));
    assert_eq!(s["slug"], "radio-u-101");
    assert_eq!(s["max_listeners"], 200, "defaults to the plan's limit");
    assert_eq!(s["mounts"][1]["format"], "aac");
    let password = s["source_password"].as_str().expect("password").to_string();
    assert!(password.len() >= 16);
    assert_eq!(
        cp.get(&format!("/v1/stations/{sid}"), &key)
            .await
            .expect(200)
            .body,
        s
    );

    // Same name again: a distinct slug is derived; an explicit taken slug is a conflict.
    let s2 = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "Radio Ñu 101!", "mounts": [mp3("/x", 64)]}),
        )
        .await
        .expect(201)
        .body;
    assert_ne!(s2["slug"], s["slug"]);
    cp.post(
        "/v1/stations",
        &key,
        json!({"name": "Z", "slug": "radio-u-101", "mounts": [mp3("/x", 64)]}),
    )
    .await
    .problem(409);
    cp.patch(
        &format!("/v1/stations/{sid}"),
        &key,
        json!({"slug": s2["slug"]}),
    )
    .await
    .problem(409);

    let u = cp
        .patch(
            &format!("/v1/stations/{sid}"),
            &key,
            json!({"description": "Live from Lisbon", "max_listeners": 10, "mounts": [mp3("/only.mp3", 128)]}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(u["description"], "Live from Lisbon");
    assert_eq!(u["genre"], "Jazz");
    assert_eq!(u["max_listeners"], 10);
    assert_eq!(u["mounts"], json!([mp3("/only.mp3", 128)]));

    let rotated = cp
        .post(
            &format!("/v1/stations/{sid}/source-password"),
            &key,
            json!({}),
        )
        .await
        .expect(200)
        .body;
    assert_ne!(rotated["source_password"].as_str(), Some(password.as_str()));

    // The admin reads every station and may delete one, but writes go through tenant keys.
    let all = cp.list_all("/v1/stations", &cp.admin).await;
    assert_eq!(all.len(), 2);
    cp.patch(
        &format!("/v1/stations/{sid}"),
        &cp.admin,
        json!({"name": "n"}),
    )
    .await
    .problem(403);
    cp.delete(&format!("/v1/stations/{sid}"), &key)
        .await
        .expect(204);
    cp.get(&format!("/v1/stations/{sid}"), &key)
        .await
        .problem(404);
    cp.delete(&format!("/v1/stations/{sid}"), &key)
        .await
        .problem(404);
    cp.delete(
        &format!("/v1/stations/{}", s2["id"].as_str().expect("id")),
        &cp.admin,
    )
    .await
    .expect(204);
    assert!(cp.list_all("/v1/stations", &key).await.is_empty());
    cp.stop().await;
}

async fn plan_limits_refuse_and_change_nothing(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Small", "plan_basic").await;
    let cases = [
        (
            json!({"name": "a", "mounts": [mp3("/a", 128)]}),
            "max_bitrate_kbps",
        ),
        (
            json!({"name": "a", "mounts": [{"path": "/a", "format": "opus", "bitrate_kbps": 64}]}),
            "allowed_formats",
        ),
        (
            json!({"name": "a", "mounts": [mp3("/a", 64), mp3("/b", 64)]}),
            "max_mounts_per_station",
        ),
        (
            json!({"name": "a", "max_listeners": 51, "mounts": [mp3("/a", 64)]}),
            "max_listeners_per_station",
        ),
    ];
    for (body, limit) in &cases {
        let r = cp
            .post("/v1/stations", &key, body.clone())
            .await
            .problem(403);
        assert_eq!(r.body["limit"], json!(limit), "{}", r.text);
        assert_eq!(r.body["type"], "https://onda.dev/problems/plan-limit");
    }
    assert!(
        cp.list_all("/v1/stations", &key).await.is_empty(),
        "refusals create nothing"
    );

    let ok = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "One", "autodj_enabled": true, "mounts": [mp3("/a", 64)]}),
        )
        .await
        .expect(201)
        .body;
    let r = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "Two", "mounts": [mp3("/a", 64)]}),
        )
        .await
        .problem(403);
    assert_eq!(r.body["limit"], "max_stations");
    assert!(
        r.text.contains("Basic"),
        "the sentence names the plan: {}",
        r.text
    );

    // Updates are held to the same limits and a refused update changes nothing.
    let sid = ok["id"].as_str().expect("id");
    for (body, limit) in [
        (json!({"mounts": [mp3("/a", 65)]}), "max_bitrate_kbps"),
        (json!({"max_listeners": 1000}), "max_listeners_per_station"),
    ] {
        let r = cp
            .patch(&format!("/v1/stations/{sid}"), &key, body)
            .await
            .problem(403);
        assert_eq!(r.body["limit"], json!(limit));
    }
    assert_eq!(
        cp.get(&format!("/v1/stations/{sid}"), &key)
            .await
            .expect(200)
            .body,
        ok
    );

    // A plan without the AutoDJ refuses it.
    let nodj = cp
        .post(
            "/v1/plans",
            &cp.admin,
            json!({"name": "NoDJ", "limits": {"max_stations": 1, "max_mounts_per_station": 1,
                   "allowed_formats": ["mp3"], "max_bitrate_kbps": 64, "max_listeners_per_station": 5,
                   "storage_bytes": 0, "max_live_streams": 0},
                   "prices": {"currency": "USD", "monthly_micros": 0, "overage_per_gb_micros": 0,
                              "overage_per_listener_hour_micros": 0}}),
        )
        .await
        .expect(201)
        .body;
    let (_, key2) = cp
        .tenant_with_key("NoDJ tenant", nodj["id"].as_str().expect("id"))
        .await;
    let r = cp
        .post(
            "/v1/stations",
            &key2,
            json!({"name": "DJ", "autodj_enabled": true, "mounts": [mp3("/a", 64)]}),
        )
        .await
        .problem(403);
    assert_eq!(r.body["limit"], "features.autodj");
    cp.stop().await;
}

async fn concurrent_creates_respect_max_stations(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Racer", "plan_standard").await;
    let cp = std::sync::Arc::new(cp);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let cp = cp.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            cp.post(
                "/v1/stations",
                &key,
                json!({"name": format!("R{i}"), "mounts": [mp3("/a", 64)]}),
            )
            .await
            .status
            .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("task"));
    }
    codes.sort_unstable();
    assert_eq!(
        codes,
        vec![201, 201, 403, 403, 403, 403, 403, 403],
        "plan_standard allows 2 stations"
    );
    assert_eq!(cp.list_all("/v1/stations", &key).await.len(), 2);
}

/// Walks every route of the OpenAPI document with tenant B's key against tenant A's objects.
async fn another_tenants_objects_answer_404_on_every_route(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (tid_a, key_a) = cp.tenant_with_key("Alpha", "plan_premium").await;
    let (_, key_b) = cp.tenant_with_key("Beta", "plan_premium").await;
    let sa = cp
        .post(
            "/v1/stations",
            &key_a,
            json!({"name": "Alpha 1", "mounts": [mp3("/a", 64)]}),
        )
        .await
        .expect(201)
        .body;
    let sid_a = sa["id"].as_str().expect("id").to_string();
    let keys_a = cp
        .list_all(&format!("/v1/tenants/{tid_a}/api-keys"), &cp.admin)
        .await;
    let kid_a = keys_a[0]["id"].as_str().expect("key id").to_string();
    // A draft invoice of A for this month, to be read through B's key.
    let month = &time::OffsetDateTime::now_utc().date().to_string()[..7];
    cp.post("/v1/billing/runs", &cp.admin, json!({ "period": month }))
        .await
        .expect(200);
    let inv_a = cp
        .list_all(&format!("/v1/invoices?tenant_id={tid_a}"), &cp.admin)
        .await;
    let inv_a = inv_a[0]["id"].as_str().expect("A's invoice").to_string();
    let live_a = cp
        .post("/v1/streams", &key_a, json!({"name": "Alpha Live"}))
        .await
        .expect(201)
        .body;
    let lvs_a = live_a["id"].as_str().expect("stream id").to_string();
    let lvs_slug = live_a["slug"].as_str().expect("slug").to_string();
    cp.call(
        Method::PUT,
        "/v1/users/fan-a",
        Some(&key_a),
        Some(json!({"display_name": "A's fan"})),
    )
    .await
    .expect(201);
    let user_a = cp.get("/v1/users/fan-a", &key_a).await.expect(200).body;
    // A credit of A's fan: a transaction to refund and read through B's key.
    let txn_a = cp
        .http
        .post(format!("{}/v1/users/fan-a/wallet/credits", cp.url))
        .bearer_auth(&key_a)
        .header("idempotency-key", "walk-credit")
        .json(&json!({"amount": 500, "reference": "psp-1"}))
        .send()
        .await
        .expect("credit");
    assert_eq!(txn_a.status().as_u16(), 201);
    let txn_a: Value = txn_a.json().await.expect("transaction");
    let txn_a = txn_a["id"].as_str().expect("transaction id").to_string();
    let pyt_a = a_payout(&cp, &key_a).await;
    let sk_a = cp
        .post("/v1/signing-keys", &key_a, json!({}))
        .await
        .expect(201)
        .body;
    let sk_a = sk_a["id"].as_str().expect("signing key id").to_string();
    let whk_a = cp
        .post(
            "/v1/webhooks",
            &key_a,
            json!({"url": "http://127.0.0.1:9/hooks", "events": ["*"]}),
        )
        .await
        .expect(201)
        .body;
    let whk_a = whk_a["id"].as_str().expect("webhook id").to_string();

    let spec = cp
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    let paths = spec["paths"].as_object().expect("paths");
    let mut walked = 0;
    for (template, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let path = template
                .replace("{key_id}", &kid_a)
                .replace("{user_id}", "fan-a")
                .replace("{creator_id}", "fan-a")
                .replace("{kid}", &sk_a)
                .replace("{station}", &sid_a)
                .replace("{mount}", "radio.mp3")
                .replace("{stream}", &format!("{lvs_slug}.m3u8"))
                .replace(
                    "{id}",
                    if template.starts_with("/v1/stations") {
                        &sid_a
                    } else if template.starts_with("/v1/tenants") {
                        &tid_a
                    } else if template.starts_with("/v1/invoices") {
                        &inv_a
                    } else if template.starts_with("/v1/streams") {
                        &lvs_a
                    } else if template.starts_with("/v1/webhooks") {
                        &whk_a
                    } else if template.starts_with("/v1/transactions") {
                        &txn_a
                    } else if template.starts_with("/v1/payouts") {
                        &pyt_a
                    } else {
                        "plan_basic"
                    },
                );
            // The public push feed never ends by itself; the cluster tests read it.
            if template == "/api/nowplaying/{station}/events" {
                continue;
            }
            // B putting a user with A's user's id makes B's own user (ids are each tenant's
            // own); the users test checks that A's is untouched by it.
            if (method.as_str(), template.as_str()) == ("put", "/v1/users/{user_id}") {
                continue;
            }
            let body = matches!(m, Method::POST | Method::PATCH | Method::PUT).then(|| json!({}));
            let r = cp.call(m.clone(), &path, Some(&key_b), body).await;
            let code = r.status.as_u16();
            let expected: &[u16] = match (method.as_str(), template.as_str()) {
                // Public system routes.
                ("get", "/healthz" | "/readyz" | "/metrics" | "/openapi.json") => &[200],
                // The public redirector: A's station is not on the air (no node carries it).
                ("get", "/listen/{station}/{mount}") => &[404, 503],
                // Public now-playing: anyone may read it (404 until the view has the station).
                ("get", "/api/nowplaying/{station}") => &[200, 404],
                // Public song requests: A's station takes none (they are off).
                ("get", "/api/station/{station}/requests")
                | ("post", "/api/station/{station}/request/{request_id}") => &[403],
                // B's own view: its identity and its (empty) station list.
                ("get", "/v1/me" | "/v1/stations") => &[200],
                // B may create stations for itself (the empty body is refused before anything).
                ("post", "/v1/stations") => &[422],
                // B's own invoices (none), and A's invoice as if it did not exist.
                ("get", "/v1/invoices") => &[200],
                // B's own realtime usage (none); naming A is a 404 (realtime_usage.rs).
                ("get", "/v1/realtime/usage") => &[200],
                ("get", "/v1/invoices/{id}") => &[404],
                // B's own live streams, and creating one (the empty body is refused); A's
                // stream through B's key as if it did not exist.
                ("get", "/v1/streams") => &[200],
                ("post", "/v1/streams") => &[422],
                (_, t) if t.starts_with("/v1/streams/") => &[404],
                // The public HLS redirector: A's stream is not placed in this API-only test
                // cluster (no node), so it is unavailable.
                ("get", "/watch/{stream}") => &[503],
                // B's own end users (none) and signing keys; creating a key of its own. A's
                // user and A's key through B's key: as if they did not exist.
                ("get", "/v1/users" | "/v1/signing-keys" | "/v1/reports") => &[200],
                ("post", "/v1/signing-keys") => &[201],
                (_, t) if t.starts_with("/v1/users/") || t.starts_with("/v1/signing-keys/") => {
                    &[404]
                }
                // B's own webhooks (none), and registering one (the empty body is refused);
                // A's webhook through B's key: as if it did not exist.
                ("get", "/v1/webhooks") => &[200],
                ("post", "/v1/webhooks") => &[422],
                // B's own ledger (empty); A's transaction as if it did not exist.
                ("get", "/v1/transactions" | "/v1/ledger/check" | "/v1/payouts" | "/v1/calls") => {
                    &[200]
                }
                (_, t) if t.starts_with("/v1/transactions/") => &[404],
                // A's users as creator and subscriber through B's key: as if they did not exist.
                (_, t) if t.starts_with("/v1/creators/") => &[404],
                // A's payout through B's key: as if it did not exist.
                (_, t) if t.starts_with("/v1/payouts/") => &[404],
                (_, t) if t.starts_with("/v1/webhooks/") => &[404],
                // A's station through B's key: as if it did not exist.
                (_, t) if t.starts_with("/v1/stations/") => &[404],
                // An attachment's URL is its capability (no token is looked at); the id this
                // walk puts in it names none.
                ("get", "/v1/attachments/{id}") => &[404],
                // Public pictures: the built-in one, and no picture of the walk's made-up hash.
                ("get", "/art/default.svg") => &[200],
                ("get", "/art/{sha256}/{size}") => &[404],
                // Admin collections and objects: forbidden to any tenant key.
                _ => &[403],
            };
            assert!(
                expected.contains(&code),
                "{method} {path} with another tenant's key answered {code}, expected {expected:?}: {}",
                r.text
            );
            if code >= 400 {
                assert_eq!(
                    r.content_type, "application/problem+json",
                    "{method} {path}"
                );
            }
            walked += 1;
        }
    }
    assert!(walked >= 25, "walked only {walked} routes");
    let listed = cp.list_all("/v1/stations", &key_b).await;
    assert!(listed.is_empty(), "B sees none of A's stations: {listed:?}");
    // A's station and key survived the walk untouched.
    assert_eq!(
        cp.get(&format!("/v1/stations/{sid_a}"), &key_a)
            .await
            .expect(200)
            .body,
        sa
    );
    cp.get("/v1/me", &key_a).await.expect(200);
    let wallet_a = cp.get("/v1/users/fan-a/wallet", &key_a).await.expect(200);
    assert_eq!(wallet_a.body["balance"], json!(500), "{}", wallet_a.text);
    assert_eq!(
        cp.get("/v1/users/fan-a", &key_a).await.expect(200).body,
        user_a
    );
    let keys_a = cp.get("/v1/signing-keys", &key_a).await.expect(200).body;
    assert_eq!(keys_a[0]["revoked_at"], Value::Null, "{keys_a}");
    cp.stop().await;
}

/// One route of the malformed-body table: who calls it, the list it must leave unchanged, and
/// two bodies that parse as JSON but not as the route's input.
struct Case {
    method: Method,
    path: String,
    token: String,
    /// Listed before and after: refused input changes nothing in it.
    list: String,
    /// A valid-looking body with a value of the wrong type.
    wrong_type: Value,
    /// A body with a field the route does not know (or without one it needs).
    unknown_field: Value,
}

/// Every kind of malformed body on `case`'s route is refused with its status, and nothing
/// changes.
async fn refuses_malformed(cp: &TestControlPlane, case: Case, huge: &[u8]) {
    let Case {
        method: m,
        path,
        token,
        list,
        wrong_type,
        unknown_field,
    } = case;
    let huge = huge.to_vec();

    let before = cp.list_all(&list, &token).await;
    let r = cp
        .raw(
            m.clone(),
            &path,
            &token,
            Some("application/json"),
            // Cut short before any field, so no route can first find a field it does not know.
            b"{ ".to_vec(),
        )
        .await;
    r.problem(400);
    let r = cp
        .raw(
            m.clone(),
            &path,
            &token,
            Some("application/json"),
            b"{,}".to_vec(),
        )
        .await;
    r.problem(400);
    let r = cp
        .call(m.clone(), &path, Some(&token), Some(wrong_type))
        .await
        .problem(422);
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("invalid") || d.contains("expected")),
        "{}",
        r.text
    );
    let r = cp
        .call(m.clone(), &path, Some(&token), Some(unknown_field))
        .await
        .problem(422);
    assert!(
        r.text.contains("unknown field") || r.text.contains("missing field"),
        "{}",
        r.text
    );
    cp.raw(
        m.clone(),
        &path,
        &token,
        Some("application/json"),
        huge.clone(),
    )
    .await
    .problem(413);
    cp.raw(m.clone(), &path, &token, None, b"{}".to_vec())
        .await
        .problem(415);
    cp.raw(m.clone(), &path, &token, Some("text/plain"), b"{}".to_vec())
        .await
        .problem(415);
    let after = cp.list_all(&list, &token).await;
    assert_eq!(before, after, "{m} {path}: refused input changed {list}");
}

async fn bad_input_is_refused_and_changes_nothing(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let a = cp.admin.clone();
    let (tid, key) = cp.tenant_with_key("Input", "plan_premium").await;
    let s = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "In", "mounts": [mp3("/a", 64)]}),
        )
        .await
        .expect(201)
        .body;
    let sid = s["id"].as_str().expect("id").to_string();
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024)).into_bytes();

    let cases = vec![
        Case {
            method: Method::POST,
            path: "/v1/plans".to_string(),
            token: a.clone(),
            list: "/v1/plans".to_string(),
            wrong_type: json!({"name": 5}),
            unknown_field: json!({"name": "P", "limits": {}, "prices": {}, "nonsense": true}),
        },
        Case {
            method: Method::PATCH,
            path: "/v1/plans/plan_basic".to_string(),
            token: a.clone(),
            list: "/v1/plans".to_string(),
            wrong_type: json!({"limits": {"max_stations": -1}}),
            unknown_field: json!({"limits": {"max_stationz": 2}}),
        },
        Case {
            method: Method::POST,
            path: "/v1/tenants".to_string(),
            token: a.clone(),
            list: "/v1/tenants".to_string(),
            wrong_type: json!({"name": ["x"], "plan_id": "plan_basic"}),
            unknown_field: json!({"name": "x", "plan_id": "plan_basic", "colour": "red"}),
        },
        Case {
            method: Method::PATCH,
            path: format!("/v1/tenants/{tid}"),
            token: a.clone(),
            list: "/v1/tenants".to_string(),
            wrong_type: json!({"email": 12}),
            unknown_field: json!({"status": "active"}),
        },
        Case {
            method: Method::POST,
            path: format!("/v1/tenants/{tid}/api-keys"),
            token: a.clone(),
            list: format!("/v1/tenants/{tid}/api-keys"),
            wrong_type: json!({"name": false}),
            unknown_field: json!({"name": "k", "secret": "mine"}),
        },
        Case {
            method: Method::POST,
            path: "/v1/stations".to_string(),
            token: key.clone(),
            list: "/v1/stations".to_string(),
            wrong_type: json!({"name": "S", "mounts": [{"path": "/a", "format": "flac", "bitrate_kbps": 64}]}),
            unknown_field: json!({"name": "S", "mounts": [mp3("/a", 64)], "tenant_id": tid}),
        },
        Case {
            method: Method::PATCH,
            path: format!("/v1/stations/{sid}"),
            token: key.clone(),
            list: "/v1/stations".to_string(),
            wrong_type: json!({"max_listeners": "many"}),
            unknown_field: json!({"source_password": "mine"}),
        },
        Case {
            method: Method::PUT,
            path: "/v1/users/fan-1".to_string(),
            token: key.clone(),
            list: "/v1/users".to_string(),
            wrong_type: json!({"creator": "yes"}),
            unknown_field: json!({"display_name": "F", "tenant_id": tid}),
        },
    ];
    for case in cases {
        refuses_malformed(&cp, case, &huge).await;
    }

    // Values that parse but break the rules: 422 and nothing changes.
    let before = cp.list_all("/v1/stations", &key).await;
    for body in [
        json!({"name": "", "mounts": [mp3("/a", 64)]}),
        json!({"name": "x".repeat(101), "mounts": [mp3("/a", 64)]}),
        json!({"name": "S", "mounts": []}),
        json!({"name": "S", "mounts": [mp3("no-slash", 64)]}),
        json!({"name": "S", "mounts": [mp3("/a", 64), mp3("/a", 32)]}),
        json!({"name": "S", "mounts": [mp3("/a", 0)]}),
        json!({"name": "S", "slug": "Not A Slug", "mounts": [mp3("/a", 64)]}),
        json!({"name": "S", "mounts": [mp3("/a", 64)], "max_listeners": 1_u64 << 40}),
    ] {
        cp.post("/v1/stations", &key, body).await.problem(422);
    }
    assert_eq!(before, cp.list_all("/v1/stations", &key).await);
    let plans_before = cp.list_all("/v1/plans", &a).await;
    for body in [
        json!({"limits": {"max_bitrate_kbps": 0}}),
        json!({"limits": {"allowed_formats": []}}),
        json!({"prices": {"currency": "dollars"}}),
        json!({"name": "  "}),
        json!({"prices": {"monthly_micros": u64::MAX}}),
    ] {
        cp.patch("/v1/plans/plan_basic", &a, body)
            .await
            .problem(422);
    }
    assert_eq!(plans_before, cp.list_all("/v1/plans", &a).await);

    // Tenants and keys: values over their limits.
    let tenants_before = cp.list_all("/v1/tenants", &a).await;
    let keys_path = format!("/v1/tenants/{tid}/api-keys");
    let keys_before = cp.list_all(&keys_path, &a).await;
    cp.post(
        "/v1/tenants",
        &a,
        json!({"name": "x".repeat(101), "plan_id": "plan_basic"}),
    )
    .await
    .problem(422);
    cp.patch(
        &format!("/v1/tenants/{tid}"),
        &a,
        json!({"email": format!("{}@x.io", "a".repeat(300))}),
    )
    .await
    .problem(422);
    cp.patch(
        &format!("/v1/tenants/{tid}"),
        &a,
        json!({"name": "bell\u{7}"}),
    )
    .await
    .problem(422);
    cp.post(&keys_path, &a, json!({"name": "k".repeat(101)}))
        .await
        .problem(422);
    assert_eq!(tenants_before, cp.list_all("/v1/tenants", &a).await);
    assert_eq!(keys_before, cp.list_all(&keys_path, &a).await);

    // Unknown routes and methods are problems too.
    cp.get("/v1/nowhere", &a).await.problem(404);
    cp.call(Method::PUT, "/v1/plans", Some(&a), Some(json!({})))
        .await
        .problem(405);
    // Also on the public routes under their CORS layer.
    cp.call(Method::POST, "/listen/x/radio.mp3", None, None)
        .await
        .problem(405);
    cp.stop().await;
}

async fn openapi_lists_every_served_route(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let spec = cp
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let expected = [
        ("get", "/v1/plans"),
        ("post", "/v1/plans"),
        ("get", "/v1/plans/{id}"),
        ("patch", "/v1/plans/{id}"),
        ("delete", "/v1/plans/{id}"),
        ("get", "/v1/tenants"),
        ("post", "/v1/tenants"),
        ("get", "/v1/tenants/{id}"),
        ("patch", "/v1/tenants/{id}"),
        ("delete", "/v1/tenants/{id}"),
        ("post", "/v1/tenants/{id}/suspend"),
        ("post", "/v1/tenants/{id}/resume"),
        ("get", "/v1/tenants/{id}/api-keys"),
        ("post", "/v1/tenants/{id}/api-keys"),
        ("delete", "/v1/tenants/{id}/api-keys/{key_id}"),
        ("get", "/v1/stations"),
        ("post", "/v1/stations"),
        ("get", "/v1/stations/{id}"),
        ("patch", "/v1/stations/{id}"),
        ("delete", "/v1/stations/{id}"),
        ("post", "/v1/stations/{id}/source-password"),
        ("get", "/v1/stations/{id}/placement"),
        ("get", "/v1/stations/{id}/media"),
        ("post", "/v1/stations/{id}/media"),
        ("get", "/v1/stations/{id}/media/{media_id}"),
        ("patch", "/v1/stations/{id}/media/{media_id}"),
        ("delete", "/v1/stations/{id}/media/{media_id}"),
        ("get", "/v1/nodes"),
        ("get", "/v1/nodes/{id}"),
        ("post", "/v1/nodes/{id}/drain"),
        ("post", "/v1/nodes/{id}/resume"),
        ("post", "/v1/nodes/{id}/revoke"),
        ("get", "/v1/join-tokens"),
        ("post", "/v1/join-tokens"),
        ("delete", "/v1/join-tokens/{id}"),
        ("get", "/listen/{station}/{mount}"),
        ("get", "/api/nowplaying/{station}"),
        ("get", "/api/nowplaying/{station}/events"),
        ("get", "/v1/stations/{id}/nowplaying"),
        ("put", "/v1/stations/{id}/art"),
        ("delete", "/v1/stations/{id}/art"),
        ("get", "/art/{sha256}/{size}"),
        ("get", "/art/default.svg"),
        ("get", "/v1/stations/{id}/embed"),
        ("get", "/api/station/{station}/requests"),
        ("post", "/api/station/{station}/request/{request_id}"),
        ("get", "/v1/stations/{id}/requests"),
        ("delete", "/v1/stations/{id}/requests"),
        ("delete", "/v1/stations/{id}/requests/{request_id}"),
        ("get", "/v1/stations/{id}/usage"),
        ("get", "/v1/stations/{id}/listeners"),
        ("get", "/v1/prometheus/targets"),
        ("get", "/v1/stations/{id}/history"),
        ("get", "/v1/realtime/usage"),
        ("post", "/v1/billing/runs"),
        ("get", "/v1/streams"),
        ("post", "/v1/streams"),
        ("get", "/v1/streams/{id}"),
        ("patch", "/v1/streams/{id}"),
        ("delete", "/v1/streams/{id}"),
        ("post", "/v1/streams/{id}/stream-key"),
        ("get", "/v1/streams/{id}/ingest"),
        ("post", "/v1/streams/{id}/playback-tokens"),
        ("get", "/v1/streams/{id}/viewers"),
        ("get", "/v1/streams/{id}/usage"),
        ("get", "/v1/streams/{id}/sessions"),
        ("get", "/watch/{stream}"),
        ("get", "/v1/invoices"),
        ("get", "/v1/invoices/{id}"),
        ("post", "/v1/invoices/{id}/finalize"),
        ("get", "/v1/stations/{id}/playlists"),
        ("post", "/v1/stations/{id}/playlists"),
        ("get", "/v1/stations/{id}/playlists/{playlist_id}"),
        ("patch", "/v1/stations/{id}/playlists/{playlist_id}"),
        ("delete", "/v1/stations/{id}/playlists/{playlist_id}"),
        ("get", "/v1/stations/{id}/autodj"),
        ("put", "/v1/stations/{id}/autodj"),
        ("get", "/v1/stations/{id}/streamers"),
        ("post", "/v1/stations/{id}/streamers"),
        ("patch", "/v1/stations/{id}/streamers/{streamer_id}"),
        ("delete", "/v1/stations/{id}/streamers/{streamer_id}"),
        ("get", "/v1/stations/{id}/live"),
        ("get", "/v1/users"),
        ("get", "/v1/users/{user_id}"),
        ("put", "/v1/users/{user_id}"),
        ("delete", "/v1/users/{user_id}"),
        ("post", "/v1/users/{user_id}/tokens"),
        ("get", "/v1/signing-keys"),
        ("post", "/v1/signing-keys"),
        ("delete", "/v1/signing-keys/{kid}"),
        ("get", "/v1/webhooks"),
        ("post", "/v1/webhooks"),
        ("get", "/v1/webhooks/{id}"),
        ("delete", "/v1/webhooks/{id}"),
        ("get", "/v1/webhooks/{id}/deliveries"),
        ("post", "/v1/webhooks/{id}/test"),
        ("get", "/v1/me/conversations"),
        ("get", "/v1/reports"),
        ("get", "/v1/me/conversations/{user_id}/messages"),
        ("post", "/v1/me/attachments"),
        ("get", "/v1/attachments/{id}"),
        ("post", "/v1/users/{user_id}/notifications"),
        ("get", "/v1/me/notifications"),
        ("post", "/v1/me/notifications/{id}/read"),
        ("post", "/v1/me/notifications/read-all"),
        ("get", "/v1/users/{user_id}/wallet"),
        ("post", "/v1/users/{user_id}/wallet/credits"),
        ("post", "/v1/users/{user_id}/wallet/adjustments"),
        ("get", "/v1/users/{user_id}/transactions"),
        ("get", "/v1/me/wallet"),
        ("get", "/v1/me/transactions"),
        ("get", "/v1/transactions"),
        ("get", "/v1/transactions/{id}"),
        ("post", "/v1/transactions/{id}/refunds"),
        ("get", "/v1/ledger/check"),
        ("post", "/v1/me/tips"),
        ("get", "/v1/users/{user_id}/earnings"),
        ("get", "/v1/me/earnings"),
        ("post", "/v1/me/payouts"),
        ("get", "/v1/me/payouts"),
        ("get", "/v1/payouts"),
        ("post", "/v1/payouts/{id}/paid"),
        ("post", "/v1/payouts/{id}/rejected"),
        ("post", "/v1/me/subscriptions"),
        ("get", "/v1/me/subscriptions"),
        ("delete", "/v1/me/subscriptions/{creator_id}"),
        ("put", "/v1/creators/{creator_id}/subscribers/{user_id}"),
        ("delete", "/v1/creators/{creator_id}/subscribers/{user_id}"),
        ("post", "/v1/me/streams/{id}/purchase"),
        ("post", "/v1/me/streams/{id}/playback"),
        ("get", "/v1/calls"),
        ("get", "/v1/me/calls"),
        ("get", "/v1/me/streams"),
        ("get", "/v1/me/streams/{id}"),
        ("patch", "/v1/me/streams/{id}"),
        ("get", "/v1/streams/{id}/chat"),
        ("get", "/v1/me/moderators"),
        ("put", "/v1/me/moderators/{user_id}"),
        ("delete", "/v1/me/moderators/{user_id}"),
        ("get", "/v1/creators/{creator_id}/moderators"),
        ("put", "/v1/creators/{creator_id}/moderators/{user_id}"),
        ("delete", "/v1/creators/{creator_id}/moderators/{user_id}"),
        ("get", "/v1/me/streams/{id}/sessions"),
        ("get", "/v1/me/ice-servers"),
        ("get", "/v1/me"),
        ("patch", "/v1/me"),
        ("get", "/v1/me/creators/{creator_id}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    for (m, p) in expected {
        let op = &spec["paths"][p][m];
        assert!(op.is_object(), "{m} {p} is missing from /openapi.json");
        for name in p.split('{').skip(1).filter_map(|s| s.split('}').next()) {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            assert!(
                params
                    .iter()
                    .any(|x| x["name"] == name && x["in"] == "path"),
                "{m} {p}: parameter {name} undocumented"
            );
        }
    }
    // And the other way: everything the document lists is served (no "no route" fallback).
    for (template, ops) in spec["paths"].as_object().expect("paths") {
        for m in ops.as_object().expect("ops").keys() {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).expect("method");
            let r = cp
                .call(
                    method,
                    &template.replace('{', "x").replace('}', ""),
                    None,
                    None,
                )
                .await;
            assert!(
                !r.text.contains("There is no route"),
                "{m} {template} is documented but not served"
            );
        }
    }
    // Errors are documented as problem documents, and every /v1 operation documents 401 but
    // the attachments' capability URLs (they take no token).
    for (template, ops) in spec["paths"].as_object().expect("paths") {
        for (m, op) in ops.as_object().expect("ops") {
            for (status, resp) in op["responses"].as_object().expect("responses") {
                if status.as_str() >= "400" && template.starts_with("/v1/") {
                    let content = resp["content"].as_object().cloned().unwrap_or_default();
                    assert!(
                        content.keys().all(|k| k == "application/problem+json"),
                        "{m} {template} {status}: {content:?}"
                    );
                }
            }
            if template.starts_with("/v1/attachments/") {
                assert!(
                    op["responses"].get("401").is_none(),
                    "{m} {template} documents a 401 it never answers"
                );
            } else if template.starts_with("/v1/") {
                assert!(
                    op["responses"].get("401").is_some(),
                    "{m} {template} lacks 401"
                );
            }
        }
    }
    let documented: usize = spec["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|o| o.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        expected.len(),
        "a route was added: list it in this test"
    );
    cp.stop().await;
}

async fn health_readiness_and_metrics(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    cp.call(Method::GET, "/healthz", None, None)
        .await
        .expect(200);
    cp.call(Method::GET, "/readyz", None, None)
        .await
        .expect(200);
    cp.get("/v1/plans", &cp.admin).await.expect(200);
    cp.get("/v1/plans/plan_nope", &cp.admin).await.expect(404);
    let m = cp
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect(200);
    assert!(m.content_type.starts_with("text/plain"));
    let text = m.text;
    assert!(
        text.contains(r#"onda_http_requests_total{method="GET",route="/v1/plans",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"onda_http_requests_total{method="GET",route="/v1/plans/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("onda_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(text.contains("onda_build_info{"), "{text}");
    cp.stop().await;
}

async fn control_characters_are_refused_never_a_500(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let a = cp.admin.clone();
    let (tid, key) = cp.tenant_with_key("Nul", "plan_premium").await;
    let stations_before = cp.list_all("/v1/stations", &key).await;
    for (m, path, token, body) in [
        (Method::GET, "/v1/plans/%00".to_string(), a.clone(), None),
        (
            Method::GET,
            "/v1/plans?cursor=%00".to_string(),
            a.clone(),
            None,
        ),
        (
            Method::GET,
            "/v1/stations?cursor=a%00".to_string(),
            key.clone(),
            None,
        ),
        (
            Method::GET,
            "/v1/stations/%00".to_string(),
            key.clone(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/stations/%00".to_string(),
            key.clone(),
            None,
        ),
        (
            Method::GET,
            format!("/v1/tenants/{tid}%00"),
            a.clone(),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants".to_string(),
            a.clone(),
            Some(json!({"name": "x", "plan_id": "plan_\u{0}"})),
        ),
        (
            Method::POST,
            "/v1/stations".to_string(),
            key.clone(),
            Some(json!({"name": "S", "description": "a\u{0}b", "mounts": [mp3("/a", 64)]})),
        ),
        (
            Method::POST,
            "/v1/stations".to_string(),
            key.clone(),
            Some(json!({"name": "S", "genre": "\u{0}", "mounts": [mp3("/a", 64)]})),
        ),
        (
            Method::PATCH,
            "/v1/plans/plan_basic".to_string(),
            a.clone(),
            Some(json!({"description": "x\u{0}"})),
        ),
        (
            Method::POST,
            format!("/v1/tenants/{tid}/api-keys"),
            a.clone(),
            Some(json!({"name": "k\u{0}"})),
        ),
    ] {
        let r = cp.call(m.clone(), &path, Some(&token), body).await;
        let code = r.status.as_u16();
        assert!(
            (400..500).contains(&code),
            "{m} {path} answered {code}: {}",
            r.text
        );
        assert_eq!(r.content_type, "application/problem+json", "{m} {path}");
    }
    assert_eq!(
        stations_before,
        cp.list_all("/v1/stations", &key).await,
        "nothing was stored"
    );
    let plan = cp.get("/v1/plans/plan_basic", &a).await.expect(200).body;
    assert!(
        !plan["description"]
            .as_str()
            .unwrap_or_default()
            .contains('\u{0}')
    );
    // The scheme of the Authorization header is case-insensitive (RFC 9110).
    let r = cp
        .http
        .get(format!("{}/v1/me", cp.url))
        .header("authorization", format!("bearer {key}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    // Odd methods do not mint new metric series.
    cp.call(
        Method::from_bytes(b"FOO1").expect("method"),
        "/healthz",
        None,
        None,
    )
    .await;
    let m = cp.call(Method::GET, "/metrics", None, None).await.text;
    assert!(!m.contains("FOO1"), "{m}");
    assert!(m.contains(r#"method="other""#), "{m}");
    cp.stop().await;
}

/// A suspension must survive concurrent updates of the same tenant (on PostgreSQL a
/// read-modify-write without the row lock wrote `active` back).
async fn concurrent_updates_never_undo_a_suspension(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let cp = std::sync::Arc::new(cp);
    let (tid, _) = cp.tenant_with_key("Busy", "plan_basic").await;
    for round in 0..12 {
        cp.post(&format!("/v1/tenants/{tid}/resume"), &cp.admin, json!({}))
            .await
            .expect(200);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let cp = cp.clone();
            let tid = tid.clone();
            tasks.push(tokio::spawn(async move {
                cp.patch(
                    &format!("/v1/tenants/{tid}"),
                    &cp.admin,
                    json!({"name": format!("Busy {round}.{i}")}),
                )
                .await
                .status
                .as_u16()
            }));
        }
        let suspend = {
            let cp = cp.clone();
            let tid = tid.clone();
            tokio::spawn(async move {
                cp.post(&format!("/v1/tenants/{tid}/suspend"), &cp.admin, json!({}))
                    .await
                    .status
                    .as_u16()
            })
        };
        for t in tasks {
            assert_eq!(t.await.expect("task"), 200);
        }
        assert_eq!(suspend.await.expect("task"), 200);
        let t = cp
            .get(&format!("/v1/tenants/{tid}"), &cp.admin)
            .await
            .expect(200)
            .body;
        assert_eq!(
            t["status"], "suspended",
            "round {round}: a concurrent update undid the suspension"
        );
    }
}

async fn streamer_accounts(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Deejays", "plan_premium").await;
    let s = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "DJ FM", "autodj_enabled": true, "mounts": [mp3("/radio.mp3", 128)]}),
        )
        .await
        .expect(201)
        .body;
    let sid = s["id"].as_str().expect("id").to_string();
    let base = format!("/v1/stations/{sid}/streamers");
    let dj = cp
        .post(
            &base,
            &key,
            json!({"username": "nova", "password": "friday-night", "display_name": "DJ Nova"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(dj["username"], "nova");
    assert_eq!(dj["display_name"], "DJ Nova");
    assert!(
        dj.get("password").is_none() && dj.get("password_hash").is_none(),
        "{dj}"
    );
    // Bad input is refused with a sentence and creates nothing.
    for (body, status) in [
        (
            json!({"username": "nova", "password": "another-one-2"}),
            409,
        ),
        (
            json!({"username": "source", "password": "friday-night"}),
            422,
        ),
        (
            json!({"username": "Nova Space", "password": "friday-night"}),
            422,
        ),
        (json!({"username": "kai", "password": "short"}), 422),
        (json!({"username": "kai", "password": "elevenchars"}), 422),
        (
            json!({"username": "kai", "password": "has:colon-in-it"}),
            422,
        ),
        (
            json!({"username": "kai", "password": "friday-night", "extra": 1}),
            422,
        ),
    ] {
        let r = cp.post(&base, &key, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
        assert_eq!(r.content_type, "application/problem+json");
        if body["password"].as_str().is_some_and(|p| p.len() < 12) {
            assert!(r.text.contains("at least 12"), "{}", r.text);
        }
    }
    let listed = cp.list_all(&base, &key).await;
    assert_eq!(listed.len(), 1);
    let id = dj["id"].as_str().expect("id");
    let patched = cp
        .call(
            Method::PATCH,
            &format!("{base}/{id}"),
            Some(&key),
            Some(json!({"display_name": "Nova", "password": "saturday-night"})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["display_name"], "Nova");
    let short = cp
        .call(
            Method::PATCH,
            &format!("{base}/{id}"),
            Some(&key),
            Some(json!({"password": "elevenchars"})),
        )
        .await;
    assert_eq!(short.status.as_u16(), 422, "{}", short.text);
    assert!(short.text.contains("at least 12"), "{}", short.text);
    // Where DJs connect: the live mount under the station's slug.
    let live = cp
        .call(
            Method::GET,
            &format!("/v1/stations/{sid}/live"),
            Some(&key),
            None,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(live["mount"], "/dj-fm/live");
    cp.call(Method::DELETE, &format!("{base}/{id}"), Some(&key), None)
        .await
        .expect(204);
    assert!(cp.list_all(&base, &key).await.is_empty());
    // A plan without the AutoDJ has no live DJs.
    let (_, no_autodj) = cp.tenant_with_key("Plain", "plan_premium").await;
    let plan = cp
        .post(
            "/v1/plans",
            &cp.admin,
            json!({
                "name": "Relay only",
                "limits": {"max_stations": 1, "max_mounts_per_station": 1, "allowed_formats": ["mp3"],
                           "max_bitrate_kbps": 128, "max_listeners_per_station": 10, "storage_bytes": 0,
                           "max_live_streams": 0},
                "features": {"autodj": false},
                "prices": {"currency": "EUR", "monthly_micros": 1, "overage_per_gb_micros": 0,
                           "overage_per_listener_hour_micros": 0}
            }),
        )
        .await
        .expect(201)
        .body;
    let (_, plain_key) = cp
        .tenant_with_key("Relay Co", plan["id"].as_str().expect("plan id"))
        .await;
    let ps = cp
        .post(
            "/v1/stations",
            &plain_key,
            json!({"name": "Plain FM", "mounts": [mp3("/a.mp3", 64)]}),
        )
        .await
        .expect(201)
        .body;
    let r = cp
        .post(
            &format!("/v1/stations/{}/streamers", ps["id"].as_str().expect("id")),
            &plain_key,
            json!({"username": "kai", "password": "friday-night"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.text);
    assert!(r.text.contains("AutoDJ"), "{}", r.text);
    // Another tenant's key sees nothing of it.
    let r = cp.call(Method::GET, &base, Some(&no_autodj), None).await;
    assert_eq!(r.status.as_u16(), 404);
}

async fn playlists_and_schedules(b: Backend) {
    use onda_tests::media::{Kind, Tags, make_track, upload};
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (_, key) = cp.tenant_with_key("Scheduler", "plan_premium").await;
    let s = cp
        .post(
            "/v1/stations",
            &key,
            json!({"name": "Sched FM", "autodj_enabled": true, "mounts": [mp3("/radio.mp3", 128)]}),
        )
        .await
        .expect(201)
        .body;
    let sid = s["id"].as_str().expect("id").to_string();
    let tags = Tags {
        artist: "A",
        title: "Song",
        album: "",
    };
    let file = make_track(dir.path(), "song", Kind::Mp3, 2.0, 440, &tags).await;
    let media = upload(
        &cp,
        &key,
        &sid,
        "song.mp3",
        std::fs::read(&file).expect("read"),
    )
    .await
    .expect(201)
    .body;
    let mid = media["id"].as_str().expect("media id").to_string();
    let base = format!("/v1/stations/{sid}/playlists");

    let night = cp
        .post(
            &base,
            &key,
            json!({"name": "Night", "kind": "scheduled", "days": [5, 6], "start": "22:00",
                   "end": "02:00", "media_ids": [mid]}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(night["order"], "shuffle");
    assert_eq!(night["media_ids"], json!([mid]));
    let jingles = cp
        .post(
            &base,
            &key,
            json!({"name": "Jingles", "kind": "interval", "every_songs": 3, "order": "sequential",
                   "media_ids": [mid]}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(jingles["every_songs"], 3);
    // Bad playlists are refused with a sentence (naming the field and the value where one is
    // malformed) and create nothing.
    for (body, status, says) in [
        (json!({"name": "Night", "kind": "rotation"}), 409, ""),
        (
            json!({"name": "X", "kind": "scheduled", "start": "25:00", "end": "02:00"}),
            422,
            r#"start: \"25:00\" is not a time of day \"HH:MM\" (00:00 to 23:59)"#,
        ),
        (
            json!({"name": "X", "kind": "scheduled", "start": "22:00", "end": "2:00"}),
            422,
            r#"end: \"2:00\" is not a time of day"#,
        ),
        (
            json!({"name": "X", "kind": "scheduled", "start": "22:00"}),
            422,
            "needs start and end",
        ),
        (
            json!({"name": "X", "kind": "scheduled", "start": "22:00", "end": "23:00", "days": [8]}),
            422,
            "",
        ),
        (
            json!({"name": "X", "kind": "rotation", "every_songs": 2}),
            422,
            "",
        ),
        (json!({"name": "X", "kind": "interval"}), 422, ""),
        (
            json!({"name": "X", "kind": "rotation", "media_ids": ["med_nope"]}),
            422,
            "",
        ),
        (
            json!({"name": "X", "kind": "weekly"}),
            422,
            "kind: unknown variant `weekly`",
        ),
        (
            json!({"name": "X", "kind": "rotation", "order": "alphabetical"}),
            422,
            "order: unknown variant `alphabetical`",
        ),
    ] {
        let r = cp.post(&base, &key, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
        assert!(
            r.text.contains(says),
            "{body}: {}\n  wanted: {says}",
            r.text
        );
    }
    assert_eq!(cp.list_all(&base, &key).await.len(), 2);
    let nid = night["id"].as_str().expect("id");
    let patched = cp
        .call(
            Method::PATCH,
            &format!("{base}/{nid}"),
            Some(&key),
            Some(json!({"end": "03:30", "order": "random"})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (patched["end"].as_str(), patched["order"].as_str()),
        (Some("03:30"), Some("random"))
    );
    // The station's time zone.
    let tz = cp
        .call(
            Method::PUT,
            &format!("/v1/stations/{sid}/autodj"),
            Some(&key),
            Some(json!({"timezone": "America/New_York", "crossfade_ms": 3000})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(tz["timezone"], "America/New_York");
    let got = cp
        .call(
            Method::GET,
            &format!("/v1/stations/{sid}/autodj"),
            Some(&key),
            None,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        got,
        json!({"timezone": "America/New_York", "crossfade_ms": 3000})
    );
    let r = cp
        .call(
            Method::PUT,
            &format!("/v1/stations/{sid}/autodj"),
            Some(&key),
            Some(json!({"timezone": "UTC", "crossfade_ms": 20000})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.text);
    let r = cp
        .call(
            Method::PUT,
            &format!("/v1/stations/{sid}/autodj"),
            Some(&key),
            Some(json!({"timezone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.text);
    assert!(
        r.text
            .contains(r#"timezone \"Mars/Olympus\" is not a known IANA time zone"#),
        "{}",
        r.text
    );
    // Deleting the file drops it from the playlists.
    cp.call(
        Method::DELETE,
        &format!("/v1/stations/{sid}/media/{mid}"),
        Some(&key),
        None,
    )
    .await
    .expect(204);
    let after = cp
        .call(Method::GET, &format!("{base}/{nid}"), Some(&key), None)
        .await
        .expect(200)
        .body;
    assert_eq!(after["media_ids"], json!([]));
    cp.call(Method::DELETE, &format!("{base}/{nid}"), Some(&key), None)
        .await
        .expect(204);
    assert_eq!(cp.list_all(&base, &key).await.len(), 1);

    // Scheduling needs the plan's feature: Basic has only rotation.
    let (_, basic) = cp.tenant_with_key("Small", "plan_basic").await;
    let bs = cp
        .post(
            "/v1/stations",
            &basic,
            json!({"name": "Small FM", "autodj_enabled": true, "mounts": [mp3("/a.mp3", 64)]}),
        )
        .await
        .expect(201)
        .body;
    let bbase = format!("/v1/stations/{}/playlists", bs["id"].as_str().expect("id"));
    let r = cp
        .post(
            &bbase,
            &basic,
            json!({"name": "Jingles", "kind": "interval", "every_songs": 2}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.text);
    assert_eq!(r.body["limit"], "features.scheduling");
    cp.post(&bbase, &basic, json!({"name": "All", "kind": "rotation"}))
        .await
        .expect(201);
}

/// A payout requested by a creator of the tenant with `key` (earnings granted by an
/// adjustment): its id.
async fn a_payout(cp: &TestControlPlane, key: &str) -> String {
    cp.call(
        Method::PUT,
        "/v1/users/star-a",
        Some(key),
        Some(json!({"creator": true})),
    )
    .await
    .expect(201);
    let send = |path: &str, token: &str, idem: &str, body: Value| {
        cp.http
            .post(format!("{}{path}", cp.url))
            .bearer_auth(token.to_string())
            .header("idempotency-key", idem)
            .json(&body)
            .send()
    };
    let r = send(
        "/v1/users/star-a/wallet/adjustments",
        key,
        "walk-earnings",
        json!({"account": "earnings", "amount": 100, "reason": "walk"}),
    )
    .await
    .expect("adjustment");
    assert_eq!(r.status().as_u16(), 201);
    let token = cp
        .post("/v1/users/star-a/tokens", key, json!({}))
        .await
        .expect(201)
        .body["token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = send(
        "/v1/me/payouts",
        &token,
        "walk-payout",
        json!({"amount": 60}),
    )
    .await
    .expect("payout");
    assert_eq!(r.status().as_u16(), 201);
    let p: Value = r.json().await.expect("payout");
    p["id"].as_str().expect("payout id").to_string()
}

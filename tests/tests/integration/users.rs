//! A tenant's end users and their user tokens through the real API, on SQLite and PostgreSQL:
//! profiles by the tenant's own ids, tokens minted by Onda and tokens the tenant signs itself
//! with Node's `jsonwebtoken` (as tenants' backends do), and every reason a token is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

on_both_backends!(
    profiles_by_the_tenants_own_ids,
    minted_tokens_act_only_as_their_user,
    tenant_signed_tokens_and_every_refusal,
    first_mints_at_once_share_one_managed_key,
);

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Tokens signed by Node's `jsonwebtoken` package: one per `(payload, secret, alg, kid)`.
async fn node_sign(specs: Value) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/jsonwebtoken").is_dir(),
        "jsonwebtoken is installed: run scripts/install-deps.sh test"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("jwt.mjs")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(specs.to_string().as_bytes())
        .await
        .expect("write specs");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("node signs within 30 s")
        .expect("node output");
    assert!(out.status.success(), "node jwt.mjs failed");
    serde_json::from_slice(&out.stdout).expect("a JSON array of tokens")
}

/// `GET /v1/me` with `token`: (status, body).
async fn me(cp: &TestControlPlane, token: &str) -> (u16, Value) {
    let r = cp.call(Method::GET, "/v1/me", Some(token), None).await;
    (r.status.as_u16(), r.body)
}

/// Asserts `token` is refused with `status` and a detail containing `says`.
#[track_caller]
fn assert_refused(got: (u16, Value), status: u16, says: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let detail = got.1["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(says), "expected {says:?} in {detail:?}");
}

async fn profiles_by_the_tenants_own_ids(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (tid, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let path = "/v1/users/fan@example.com";
    let created = cp
        .call(
            Method::PUT,
            path,
            Some(&key),
            Some(
                json!({"display_name": "Ana 🎧", "avatar_url": "https://cdn.example/a.png",
                        "metadata": {"tier": "gold", "n": 3}}),
            ),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["id"], "fan@example.com");
    assert_eq!(created["display_name"], "Ana 🎧");
    assert_eq!(created["creator"], false);
    assert_eq!(created["metadata"], json!({"tier": "gold", "n": 3}));
    // PUT replaces the whole profile: what is left out takes its default.
    let replaced = cp
        .call(
            Method::PUT,
            path,
            Some(&key),
            Some(json!({"creator": true})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(replaced["display_name"], "fan@example.com");
    assert_eq!(replaced["creator"], true);
    assert_eq!(replaced["avatar_url"], Value::Null);
    assert_eq!(replaced["metadata"], json!({}));
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_eq!(cp.get(path, &key).await.expect(200).body, replaced);

    // Bad input: a clear 422, nothing stored.
    let long = "x".repeat(129);
    for (user, body, says) in [
        ("a b", json!({}), "must be 1 to 128"),
        (long.as_str(), json!({}), "must be 1 to 128"),
        ("u1", json!({"avatar_url": "ftp://x/y"}), "avatar_url"),
        ("u1", json!({"display_name": ""}), "display_name"),
        ("u1", json!({"metadata": {"bio": "x".repeat(5000)}}), "4096"),
        ("u1", json!({"metadata": [1, 2]}), "metadata"),
        ("u1", json!({"nickname": "x"}), "nickname"),
    ] {
        let r = cp
            .call(
                Method::PUT,
                &format!("/v1/users/{user}"),
                Some(&key),
                Some(body),
            )
            .await
            .problem(422);
        assert!(r.text.contains(says), "{says}: {}", r.text);
    }
    cp.get("/v1/users/u1", &key).await.problem(404);

    // Listing: pages by id, and search by name or id, case-insensitive and literal.
    for (id, name) in [
        ("u-1", "Bruno"),
        ("u-2", "Carla"),
        ("u-3", "carlos"),
        ("u-4", "50% off"),
    ] {
        cp.call(
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(&key),
            Some(json!({ "display_name": name })),
        )
        .await
        .expect(201);
    }
    let all = cp.list_all("/v1/users", &key).await;
    let ids: Vec<&str> = all.iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids, ["fan@example.com", "u-1", "u-2", "u-3", "u-4"]);
    let page = cp.get("/v1/users?limit=2", &key).await.expect(200).body;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert!(page["next_cursor"].is_string());
    let names = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["display_name"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        names(cp.get("/v1/users?q=CARL", &key).await.expect(200).body),
        ["Carla", "carlos"]
    );
    assert_eq!(
        names(cp.get("/v1/users?q=50%25", &key).await.expect(200).body),
        ["50% off"]
    );
    assert_eq!(
        names(cp.get("/v1/users?q=_", &key).await.expect(200).body),
        Vec::<String>::new()
    );

    // The admin has no namespace of end users; another tenant sees none of these.
    let r = cp.get("/v1/users", &cp.admin).await.problem(403);
    assert!(r.text.contains("tenant's API key"), "{}", r.text);
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    assert!(cp.list_all("/v1/users", &other).await.is_empty());
    cp.get(path, &other).await.problem(404);
    cp.delete(path, &other).await.problem(404);

    // A suspended tenant reads its users but changes none.
    cp.post(&format!("/v1/tenants/{tid}/suspend"), &cp.admin, json!({}))
        .await
        .expect(200);
    cp.get(path, &key).await.expect(200);
    cp.call(Method::PUT, path, Some(&key), Some(json!({})))
        .await
        .problem(403);
    cp.delete(path, &key).await.problem(403);
    cp.post(&format!("/v1/tenants/{tid}/resume"), &cp.admin, json!({}))
        .await
        .expect(200);

    cp.delete(path, &key).await.expect(204);
    cp.get(path, &key).await.problem(404);
    cp.delete(path, &key).await.problem(404);
    cp.stop().await;
}

async fn minted_tokens_act_only_as_their_user(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (tid, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    cp.call(
        Method::PUT,
        "/v1/users/creator-1",
        Some(&key),
        Some(json!({"display_name": "Cleo", "creator": true})),
    )
    .await
    .expect(201);
    // No body, an empty JSON object, or a lifetime.
    let minted = cp
        .call(Method::POST, "/v1/users/creator-1/tokens", Some(&key), None)
        .await
        .expect(201)
        .body;
    let token = minted["token"].as_str().expect("token").to_string();
    assert_eq!(minted["user_id"], "creator-1");
    let short = cp
        .post(
            "/v1/users/creator-1/tokens",
            &key,
            json!({"ttl_seconds": 60}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(short["kid"], minted["kid"], "one managed key signs both");
    for (body, status) in [
        (json!({"ttl_seconds": 59}), 422),
        (json!({"ttl_seconds": "1h"}), 422),
        (json!({"scope": "all"}), 422),
    ] {
        cp.post("/v1/users/creator-1/tokens", &key, body)
            .await
            .problem(status);
    }
    cp.post("/v1/users/nobody/tokens", &key, json!({}))
        .await
        .problem(404);

    // The token is a standard JWT naming the tenant, the user and the key.
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("payload"))
            .expect("base64url"),
    )
    .expect("JSON claims");
    assert_eq!(claims["iss"], json!(tid));
    assert_eq!(claims["sub"], "creator-1");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(
        (exp - now() - 3600).abs() < 60,
        "default lifetime is an hour"
    );

    // It acts as its user, and only on end-user routes.
    let (status, body) = me(&cp, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "user");
    assert_eq!(body["user"]["display_name"], "Cleo");
    assert_eq!(body["tenant"], Value::Null);
    for (method, path) in [
        (Method::GET, "/v1/stations"),
        (Method::GET, "/v1/users"),
        (Method::POST, "/v1/signing-keys"),
        (Method::GET, "/v1/tenants"),
    ] {
        let r = cp.call(method, path, Some(&token), None).await.problem(403);
        assert!(r.text.contains("user token"), "{path}: {}", r.text);
    }

    // Suspending the tenant stops its users; resuming lets them back.
    cp.post(&format!("/v1/tenants/{tid}/suspend"), &cp.admin, json!({}))
        .await
        .expect(200);
    assert_refused(me(&cp, &token).await, 403, "suspended");
    cp.post(&format!("/v1/tenants/{tid}/resume"), &cp.admin, json!({}))
        .await
        .expect(200);
    assert_eq!(me(&cp, &token).await.0, 200);

    // Revoking the managed key signs every minted token out; the next mint gets a new key.
    let kid = minted["kid"].as_str().expect("kid");
    let keys = cp.get("/v1/signing-keys", &key).await.expect(200).body;
    let managed = keys
        .as_array()
        .and_then(|k| k.iter().find(|k| k["id"] == kid))
        .expect("the managed key is listed");
    assert_eq!(managed["managed"], true);
    assert!(managed.get("secret").is_none(), "{managed}");
    cp.delete(&format!("/v1/signing-keys/{kid}"), &key)
        .await
        .expect(204);
    assert_refused(me(&cp, &token).await, 401, "revoked");
    let again = cp
        .post("/v1/users/creator-1/tokens", &key, json!({}))
        .await
        .expect(201)
        .body;
    assert_ne!(again["kid"], minted["kid"]);
    let fresh = again["token"].as_str().expect("token");
    assert_eq!(me(&cp, fresh).await.0, 200);

    // A deleted user's tokens stop at once.
    cp.delete("/v1/users/creator-1", &key).await.expect(204);
    assert_refused(me(&cp, fresh).await, 401, "does not exist");

    let m = cp.get("/metrics", &cp.admin).await.expect(200).text;
    for outcome in ["accepted", "revoked_key", "suspended", "no_user"] {
        let line = format!("onda_user_token_checks_total{{outcome=\"{outcome}\"}} ");
        let n: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(n >= 1.0, "{outcome} counted: {n}");
    }
    cp.stop().await;
}

/// A token with a header and claims of our choosing and a signature that is not one: the forms
/// a forger sends.
fn unsigned(header: Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn tenant_signed_tokens_and_every_refusal(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (tid, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let (_, key_b) = cp.tenant_with_key("Other", "plan_premium").await;
    cp.call(Method::PUT, "/v1/users/fan-1", Some(&key), Some(json!({})))
        .await
        .expect(201);
    let new_key = |k: &str| {
        let k = k.to_string();
        let cp = &cp;
        async move {
            let r = cp.post("/v1/signing-keys", &k, json!({})).await.expect(201);
            let id = r.body["id"].as_str().expect("kid").to_string();
            let secret = r.body["secret"].as_str().expect("secret").to_string();
            (id, secret)
        }
    };
    let (kid, secret) = new_key(&key).await;
    let (kid_old, secret_old) = new_key(&key).await;
    let (kid_b, secret_b) = new_key(&key_b).await;
    let claims = |exp: i64| json!({"iss": tid, "sub": "fan-1", "exp": exp});
    let t = now();
    let spec = |payload: Value, secret: &str, alg: &str, kid: &str| json!({"payload": payload, "secret": secret, "alg": alg, "kid": kid});
    let tokens = node_sign(json!([
        spec(claims(t + 600), &secret, "HS256", &kid),
        spec(claims(t + 600), &secret_old, "HS256", &kid_old),
        spec(claims(t - 3600), &secret, "HS256", &kid),
        spec(
            json!({"iss": tid, "sub": "fan-1", "exp": t + 7200, "nbf": t + 3600}),
            &secret,
            "HS256",
            &kid
        ),
        spec(claims(t + 600), &secret, "HS512", &kid),
        spec(claims(t + 600), "not-the-secret", "HS256", &kid),
        spec(claims(t + 600), &secret, "HS256", "sk_doesnotexist"),
        spec(claims(t + 600), &secret_b, "HS256", &kid_b),
        spec(
            json!({"iss": tid, "sub": "nobody", "exp": t + 600}),
            &secret,
            "HS256",
            &kid
        ),
        spec(json!({"iss": tid, "exp": t + 600}), &secret, "HS256", &kid),
    ]))
    .await;
    let [
        good,
        old,
        expired,
        early,
        hs512,
        forged,
        unknown,
        other_tenant,
        no_user,
        no_sub,
    ] = <[String; 10]>::try_from(tokens).expect("ten tokens");

    // Tokens the tenant signs itself act as the user, with either of two active keys.
    let (status, body) = me(&cp, &good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], "fan-1");
    assert_eq!(me(&cp, &old).await.0, 200);
    // Rotation: revoking the old key refuses its tokens, the new key's still work.
    cp.delete(&format!("/v1/signing-keys/{kid_old}"), &key)
        .await
        .expect(204);
    assert_refused(me(&cp, &old).await, 401, "revoked");
    assert_eq!(me(&cp, &good).await.0, 200);

    assert_refused(me(&cp, &expired).await, 401, "expired");
    assert_refused(me(&cp, &early).await, 401, "not valid before");
    assert_refused(me(&cp, &hs512).await, 401, "HS512");
    assert_refused(me(&cp, &forged).await, 401, "signature does not match");
    assert_refused(me(&cp, &unknown).await, 401, "unknown");
    assert_refused(me(&cp, &other_tenant).await, 401, "another tenant's key");
    assert_refused(me(&cp, &no_user).await, 401, "does not exist");
    assert_refused(me(&cp, &no_sub).await, 401, "sub");
    let none = unsigned(json!({"alg": "none", "kid": kid}), &claims(t + 600), "");
    assert_refused(me(&cp, &none).await, 401, "\"none\"");
    let no_kid = unsigned(json!({"alg": "HS256"}), &claims(t + 600), "AAAA");
    assert_refused(me(&cp, &no_kid).await, 401, "no kid");
    assert_refused(me(&cp, "a.b").await, 401, "not a JWT");
    assert_refused(me(&cp, "x.y.z").await, 401, "not a JWT");

    // A tenant's keys are its own: another tenant cannot list or revoke them.
    let listed = cp.get("/v1/signing-keys", &key_b).await.expect(200).body;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    cp.delete(&format!("/v1/signing-keys/{kid}"), &key_b)
        .await
        .problem(404);
    assert_eq!(me(&cp, &good).await.0, 200);

    // At most ten active keys of the tenant's own; revoked ones do not count.
    for _ in 0..9 {
        new_key(&key).await;
    }
    cp.post("/v1/signing-keys", &key, json!({}))
        .await
        .problem(409);
    cp.stop().await;
}

/// A tenant's first tokens minted all at once are signed with one managed key, not one each.
async fn first_mints_at_once_share_one_managed_key(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    for i in 0..8 {
        cp.call(
            Method::PUT,
            &format!("/v1/users/fan-{i}"),
            Some(&key),
            Some(json!({ "display_name": format!("Fan {i}") })),
        )
        .await
        .expect(201);
    }
    let mints = (0..8).map(|i| {
        let (cp, key) = (&cp, &key);
        async move {
            let r = cp
                .post(&format!("/v1/users/fan-{i}/tokens"), key, json!({}))
                .await
                .expect(201)
                .body;
            r["kid"].as_str().expect("kid").to_string()
        }
    });
    let kids = futures_util::future::join_all(mints).await;
    assert!(kids.iter().all(|k| *k == kids[0]), "one key: {kids:?}");
    let keys = cp.get("/v1/signing-keys", &key).await.expect(200).body;
    let managed: Vec<&Value> = keys
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["managed"] == true)
        .collect();
    assert_eq!(managed.len(), 1, "{keys}");
    cp.stop().await;
}

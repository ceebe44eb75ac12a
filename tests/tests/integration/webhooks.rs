//! Webhooks to a tenant's backend, on SQLite and PostgreSQL, against a small HTTP receiver in
//! the test: a message sent over the gateway arrives as a signed `message.created`; an
//! endpoint answering 500 gets the event again until it answers 200, and one that never does
//! ends `failed`; a tenant whose endpoint hangs does not delay another tenant's deliveries;
//! an `https` endpoint is delivered to when its certificate chains to a trusted root and not
//! when it does not;
//! what registration refuses, and another tenant's webhook as if it did not exist.

use hmac::{Hmac, Mac as _};
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use onda_tests::realtime::Sio;
use onda_tests::wait_for;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

on_both_backends!(
    a_message_arrives_signed_as_message_created,
    failed_attempts_are_retried_until_delivered_or_too_old,
    a_hanging_endpoint_does_not_delay_another_tenant,
    registrations_are_checked_and_tenants_kept_apart,
    https_endpoints_are_verified_against_the_trusted_roots,
);

/// How the receiver answers its `n`th request (from 1).
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    /// 500 to the first `n` requests, then 200.
    FailFirst(usize),
    AlwaysFail,
    /// Reads the request and never answers.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP server on 127.0.0.1:0 that records every request it reads.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks/onda", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(serve(stream, log, answer));
            }
        });
        Receiver { url, seen }
    }

    fn requests(&self) -> Vec<Received> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    async fn wait(&self, n: usize, within: Duration) -> Vec<Received> {
        wait_for(&format!("{n} webhook requests"), within, || async {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

/// Reads one request (headers, then `content-length` bytes), records it and answers.
async fn serve<S>(mut stream: S, log: Arc<Mutex<Vec<Received>>>, answer: Answer)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, headers) = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_string();
            let headers: HashMap<String, String> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            break (at + 4, headers);
        }
    };
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    let n = {
        let mut log = log.lock().expect("lock");
        log.push(Received { headers, body });
        log.len()
    };
    let status = match answer {
        Answer::Ok => 200,
        Answer::FailFirst(k) if n <= k => 500,
        Answer::FailFirst(_) => 200,
        Answer::AlwaysFail => 500,
        Answer::Hang => std::future::pending().await,
    };
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
}

/// Checks the `Onda-Signature` of a request the way a tenant's backend would.
fn verify(secret: &str, r: &Received) {
    let ts = &r.headers["onda-timestamp"];
    let id = &r.headers["onda-event-id"];
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}.{id}.{}", r.body).as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.headers["onda-signature"], expected, "{r:?}");
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - ts.parse::<i64>().expect("ts");
    assert!((0..60).contains(&age), "a fresh timestamp: {ts}");
}

fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).expect("JSON body")
}

/// Registers an endpoint for the tenant: (id, secret).
async fn register(cp: &TestControlPlane, key: &str, url: &str, events: Value) -> (String, String) {
    let r = cp
        .post("/v1/webhooks", key, json!({ "url": url, "events": events }))
        .await
        .expect(201)
        .body;
    let secret = r["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"), "{r}");
    (r["id"].as_str().expect("id").to_string(), secret)
}

async fn deliveries(cp: &TestControlPlane, key: &str, id: &str) -> Vec<Value> {
    cp.list_all(&format!("/v1/webhooks/{id}/deliveries"), key)
        .await
}

async fn a_message_arrives_signed_as_message_created(b: Backend) {
    let Some(cp) = TestControlPlane::start_with(b, |c| {
        c.webhooks.poll = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let (tenant, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let receiver = Receiver::start(Answer::Ok).await;
    let (hook, secret) = register(&cp, &key, &receiver.url, json!(["message.created"])).await;
    let listed = cp.get("/v1/webhooks", &key).await.expect(200).body;
    assert_eq!(listed[0]["id"], hook.as_str(), "{listed}");
    assert_eq!(listed[0]["events"], json!(["message.created"]));
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once"
    );

    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    cp.user_with_token(&key, "creator-1", "Cleo").await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "Hi Cleo!"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    let got = receiver.wait(1, Duration::from_secs(10)).await;
    let r = &got[0];
    verify(&secret, r);
    let event = body(r);
    assert_eq!(event["type"], "message.created", "{event}");
    assert_eq!(r.headers["onda-event-type"], "message.created");
    assert_eq!(
        event["id"].as_str(),
        Some(r.headers["onda-event-id"].as_str())
    );
    assert_eq!(event["tenantId"], tenant.as_str());
    assert!(
        event["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(event["data"]["id"], ack["id"]);
    assert_eq!(event["data"]["senderId"], "fan-1");
    assert_eq!(event["data"]["content"], "Hi Cleo!");
    assert_eq!(r.headers["content-type"], "application/json");

    let list = wait_for("the delivery recorded", Duration::from_secs(5), || async {
        let list = deliveries(&cp, &key, &hook).await;
        (list.first().is_some_and(|d| d["state"] == "delivered")).then_some(list)
    })
    .await;
    assert_eq!(
        list.len(),
        1,
        "only message.created is subscribed: {list:?}"
    );
    assert_eq!(list[0]["event_id"], event["id"]);
    assert_eq!(list[0]["event_type"], "message.created");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(list[0]["last_status"], 200);
    assert!(list[0]["delivered_at"].is_string() && list[0]["next_attempt_at"].is_null());
    // A presence change (the fan leaving) is not what this endpoint subscribes to.
    sio.close("fan").await;
    assert_eq!(receiver.requests().len(), 1);
    cp.stop().await;
}

async fn failed_attempts_are_retried_until_delivered_or_too_old(b: Backend) {
    let Some(cp) = TestControlPlane::start_with(b, |c| {
        c.webhooks.poll = Duration::from_millis(50);
        c.webhooks.retry_base = Duration::from_millis(100);
        c.webhooks.retry_for = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let flaky = Receiver::start(Answer::FailFirst(2)).await;
    let down = Receiver::start(Answer::AlwaysFail).await;
    let (flaky_id, secret) = register(&cp, &key, &flaky.url, json!(["*"])).await;
    let (down_id, _) = register(&cp, &key, &down.url, json!(["user.online"])).await;

    let test = cp
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{flaky_id}/test"),
            Some(&key),
            None,
        )
        .await
        .expect(202)
        .body;
    let event_id = test["event_id"].as_str().expect("event id").to_string();
    let got = flaky.wait(3, Duration::from_secs(10)).await;
    for r in &got {
        assert_eq!(
            r.headers["onda-event-id"], event_id,
            "the same event each time"
        );
        assert_eq!(body(r)["type"], "webhook.test");
        verify(&secret, r);
    }
    let d = wait_for(
        "delivered on the third attempt",
        Duration::from_secs(5),
        || async {
            let list = deliveries(&cp, &key, &flaky_id).await;
            list.into_iter().find(|d| d["state"] == "delivered")
        },
    )
    .await;
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(flaky.requests().len(), 3, "no attempt after the 200");

    // The test event goes to the endpoint it names only.
    cp.call(
        reqwest::Method::POST,
        &format!("/v1/webhooks/{down_id}/test"),
        Some(&key),
        None,
    )
    .await
    .expect(202);
    let pending = wait_for("a retry scheduled", Duration::from_secs(5), || async {
        let list = deliveries(&cp, &key, &down_id).await;
        list.into_iter()
            .find(|d| d["state"] == "pending" && d["attempts"].as_u64() >= Some(1))
    })
    .await;
    assert_eq!(pending["last_status"], 500, "{pending}");
    assert!(pending["next_attempt_at"].is_string(), "{pending}");
    let failed = wait_for(
        "given up after the retry window",
        Duration::from_secs(10),
        || async {
            let list = deliveries(&cp, &key, &down_id).await;
            list.into_iter().find(|d| d["state"] == "failed")
        },
    )
    .await;
    assert!(failed["attempts"].as_u64() >= Some(2), "{failed}");
    assert_eq!(failed["last_error"], "the endpoint answered 500");
    assert!(failed["next_attempt_at"].is_null());
    let attempts = down.requests().len();
    assert_eq!(Some(attempts as u64), failed["attempts"].as_u64());
    let metrics = cp
        .call(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text;
    for outcome in ["delivered", "retry", "failed"] {
        let line = format!("onda_webhook_deliveries_total{{outcome=\"{outcome}\"}}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&line) && !l.ends_with(" 0")),
            "{line} counted"
        );
    }
    cp.stop().await;
}

async fn a_hanging_endpoint_does_not_delay_another_tenant(b: Backend) {
    let Some(cp) = TestControlPlane::start_with(b, |c| {
        c.webhooks.poll = Duration::from_millis(50);
        c.webhooks.timeout = Duration::from_secs(20);
    })
    .await
    else {
        return;
    };
    let (_, key_a) = cp.tenant_with_key("Alpha", "plan_premium").await;
    let (_, key_b) = cp.tenant_with_key("Beta", "plan_premium").await;
    let stuck = Receiver::start(Answer::Hang).await;
    let fine = Receiver::start(Answer::Ok).await;
    let (hook_a, _) = register(&cp, &key_a, &stuck.url, json!(["*"])).await;
    let (hook_b, _) = register(&cp, &key_b, &fine.url, json!(["*"])).await;
    // More of A's events than A may have in flight at once.
    for _ in 0..8 {
        cp.call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{hook_a}/test"),
            Some(&key_a),
            None,
        )
        .await
        .expect(202);
    }
    stuck.wait(4, Duration::from_secs(5)).await;
    cp.call(
        reqwest::Method::POST,
        &format!("/v1/webhooks/{hook_b}/test"),
        Some(&key_b),
        None,
    )
    .await
    .expect(202);
    // Well within A's 20 s timeout.
    fine.wait(1, Duration::from_secs(5)).await;
    // A's events are waiting, not lost.
    let list = deliveries(&cp, &key_a, &hook_a).await;
    assert_eq!(list.len(), 8);
    assert!(list.iter().all(|d| d["state"] == "pending"), "{list:?}");
    cp.stop().await;
}

async fn registrations_are_checked_and_tenants_kept_apart(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key_a) = cp.tenant_with_key("Alpha", "plan_premium").await;
    let (_, key_b) = cp.tenant_with_key("Beta", "plan_premium").await;
    let post = |url: &str, events: Value| json!({ "url": url, "events": events });
    for (body, says) in [
        (post("ftp://hooks.example.com/x", json!(["*"])), "http"),
        (post("not a url", json!(["*"])), "not a URL"),
        (
            post("http://127.0.0.1:9/x", json!(["message.deleted"])),
            "not an event type",
        ),
        (post("http://127.0.0.1:9/x", json!([])), "events is empty"),
        (
            post("http://127.0.0.1:9/x", json!(["*", "user.online"])),
            "alone",
        ),
    ] {
        let r = cp
            .post("/v1/webhooks", &key_a, body.clone())
            .await
            .expect(422);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    cp.post(
        "/v1/webhooks",
        &cp.admin,
        post("http://127.0.0.1:9/x", json!(["*"])),
    )
    .await
    .expect(403);

    let (hook, _) = register(&cp, &key_a, "http://127.0.0.1:9/x", json!(["*"])).await;
    for path in [
        format!("/v1/webhooks/{hook}"),
        format!("/v1/webhooks/{hook}/deliveries"),
    ] {
        cp.get(&path, &key_b).await.expect(404);
    }
    cp.call(
        reqwest::Method::POST,
        &format!("/v1/webhooks/{hook}/test"),
        Some(&key_b),
        None,
    )
    .await
    .expect(404);
    cp.delete(&format!("/v1/webhooks/{hook}"), &key_b)
        .await
        .expect(404);
    let b_list = cp.get("/v1/webhooks", &key_b).await.expect(200).body;
    assert_eq!(b_list, json!([]));
    cp.delete(&format!("/v1/webhooks/{hook}"), &key_a)
        .await
        .expect(204);
    cp.get(&format!("/v1/webhooks/{hook}"), &key_a)
        .await
        .expect(404);
    cp.stop().await;

    // A control plane that does not allow private addresses refuses them, literal or named.
    let Some(strict) = TestControlPlane::start_with(b, |c| c.webhooks.allow_private = false).await
    else {
        return;
    };
    let (_, key) = strict.tenant_with_key("Alpha", "plan_premium").await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://[::1]/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/x",
    ] {
        let r = strict
            .post("/v1/webhooks", &key, post(url, json!(["*"])))
            .await
            .expect(422);
        assert!(
            r.text.contains("private") || r.text.contains("resolve"),
            "{url}: {}",
            r.text
        );
    }
    strict.stop().await;
}

/// A certificate authority of the test's own and a server certificate for 127.0.0.1 it signed.
struct TestCa {
    ca_pem: String,
    server: rustls::ServerConfig,
}

impl TestCa {
    fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::new()).expect("CA params");
        let name = format!("Onda test CA {:016x}", rand::random::<u64>());
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(Vec::new()).expect("server params");
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        onda_shared::http::install_tls_provider();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key DER"),
            )
            .expect("server TLS config");
        TestCa {
            ca_pem: ca_cert.pem(),
            server,
        }
    }

    /// A receiver that answers over TLS with this CA's certificate.
    async fn receiver(&self) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "https://{}/hooks/onda",
            listener.local_addr().expect("addr")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(self.server.clone()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, tls) = (log.clone(), tls.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve(stream, log, Answer::Ok).await;
                    }
                });
            }
        });
        Receiver { url, seen }
    }
}

async fn https_endpoints_are_verified_against_the_trusted_roots(b: Backend) {
    let trusted = TestCa::new();
    let roots = reqwest::Certificate::from_pem_bundle(trusted.ca_pem.as_bytes()).expect("PEM");
    let Some(cp) = TestControlPlane::start_with(b, move |c| {
        c.webhooks.poll = Duration::from_millis(50);
        c.webhooks.retry_base = Duration::from_secs(60);
        c.webhooks.extra_roots = roots;
    })
    .await
    else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    cp.user_with_token(&key, "fan-1", "Fan One").await;
    let good = trusted.receiver().await;
    let (good_hook, secret) = register(&cp, &key, &good.url, json!(["notification.created"])).await;
    // The same kind of server, but its CA is one the control plane was not told to trust.
    let stranger = TestCa::new().receiver().await;
    let (bad_hook, _) = register(&cp, &key, &stranger.url, json!(["notification.created"])).await;

    cp.post(
        "/v1/users/fan-1/notifications",
        &key,
        json!({ "type": "new_subscriber", "title": "A new subscriber" }),
    )
    .await
    .expect(201);

    let got = good.wait(1, Duration::from_secs(10)).await;
    verify(&secret, &got[0]);
    assert_eq!(body(&got[0])["type"], "notification.created");
    let failed = wait_for(
        "the untrusted endpoint's attempt",
        Duration::from_secs(10),
        || async {
            let list = deliveries(&cp, &key, &bad_hook).await;
            list.into_iter().find(|d| d["attempts"] == 1)
        },
    )
    .await;
    assert_eq!(failed["state"], "pending", "retried later: {failed}");
    let error = failed["last_error"].as_str().unwrap_or_default();
    eprintln!("the untrusted endpoint's error: {error}");
    assert!(
        error.contains("certificate"),
        "names the TLS failure: {failed}"
    );
    assert!(stranger.requests().is_empty(), "nothing was sent to it");
    let delivered = deliveries(&cp, &key, &good_hook).await;
    assert_eq!(delivered[0]["state"], "delivered", "{delivered:?}");
    cp.stop().await;
}

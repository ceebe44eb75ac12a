//! TURN for calls with the real coturn, on SQLite and PostgreSQL: a node's agent runs coturn on
//! loopback ports of the test's own and advertises its `turn:` URLs; a user gets ICE servers
//! with a time-limited credential from `GET /v1/me/ice-servers`; coturn's own client
//! (`turnutils_uclient`) allocates relays with it over UDP and TCP and relays data through them,
//! and is refused with a wrong password or an expired (correctly signed) credential. A secret
//! the control plane adds reaches coturn without a restart. When coturn is killed, the agent
//! starts it again. With a certificate it relays over TLS too; with the production peer policy
//! it refuses to relay to loopback peers. What a tenant's users relay is metered from coturn's
//! log onto the tenant's usage and invoice, once, also across a restart of the agent.

use onda_control_plane::db::Db;
use onda_control_plane::turn;
use onda_tests::cluster::ControlPlane;
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::on_both_backends;
use onda_tests::turn::{
    TurnPorts, agent_env, allocate, free_udp_tcp_port, relay, require_coturn, self_signed_cert,
};
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    coturn_relays_with_the_control_planes_credentials_only,
    a_calls_parties_get_relays_of_the_node_that_coturn_accepts,
    relayed_bytes_are_metered_onto_the_tenants_usage_and_invoice_once,
);

/// A user `id` of a new tenant and a user token for them: (tenant id, token).
async fn user(cp: &ControlPlane, id: &str) -> (String, String) {
    let key = cp.tenant_key("Calls Co").await;
    (
        cp.tenant_id(&key).await,
        cp.user_token(&key, id, "Fan").await,
    )
}

/// Polls until a relay is allocated with this credential (the node gets the secrets with its
/// desired state, a moment after it is ready); panics with the client's last output.
async fn allocates(url: &str, username: &str, password: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match allocate(url, username, password).await {
            Ok(summary) => return summary,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("no relay at {url} for {username} within {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The pid of the coturn the agent of `fx.agents[0]` runs, from coturn's pid file.
fn coturn_pid(fx: &ClusterFixture) -> Option<i32> {
    let path = fx.agents[0].proc.path().join("state/turn/turnserver.pid");
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

async fn turn_cluster(backend: Backend) -> Option<ClusterFixture> {
    turn_cluster_with(backend, Vec::new()).await
}

/// A cluster of one node running TURN, with more `ONDA_TURN_*` settings `more`.
async fn turn_cluster_with(
    backend: Backend,
    more: Vec<(String, String)>,
) -> Option<ClusterFixture> {
    require_coturn();
    let mut fx = ClusterFixture::start_on(ClusterSpec {
        backend,
        ..ClusterSpec::default()
    })
    .await?;
    let mut env = agent_env(&TurnPorts::free());
    env.retain(|(k, _)| !more.iter().any(|(m, _)| m == k));
    env.extend(more);
    fx.join_with_env("edge-turn", env).await;
    fx.wait_ready(1, Duration::from_secs(30)).await;
    Some(fx)
}

async fn coturn_relays_with_the_control_planes_credentials_only(backend: Backend) {
    let Some(fx) = turn_cluster(backend).await else {
        return;
    };
    let urls = onda_tests::turn::advertised(&fx.cp).await;
    let port = onda_tests::turn::parse_url(&urls[0]).1;
    assert_eq!(
        urls,
        [
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp")
        ]
    );
    // coturn's files, the secrets among them, are the agent's user's only.
    let dir = fx.agents[0].proc.path().join("state/turn");
    let mode = std::fs::metadata(&dir).expect("state/turn").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    let (tenant, token) = user(&fx.cp, "fan-1").await;

    let before = onda_control_plane::db::now();
    let (s, ice) = fx
        .cp
        .tenant_call(&token, Method::GET, "/v1/me/ice-servers?region=test", None)
        .await;
    assert_eq!(s, 200, "{ice}");
    let servers = ice["iceServers"].as_array().expect("iceServers");
    assert_eq!(servers.len(), 1, "{ice}");
    assert_eq!(servers[0]["urls"], json!(urls));
    let username = servers[0]["username"]
        .as_str()
        .expect("username")
        .to_string();
    let password = servers[0]["credential"]
        .as_str()
        .expect("credential")
        .to_string();
    let (expiry, who) = username.split_once(':').expect("expiry:user");
    assert_eq!(who, format!("{tenant}.fan-1"));
    let expiry: i64 = expiry.parse().expect("expiry");
    // turn.credential_ttl_secs: an hour by default.
    assert!(
        (before + 3600..=before + 3610).contains(&expiry),
        "{username}"
    );
    assert!(ice["expiresAt"].is_string(), "{ice}");

    // Relays over UDP and TCP with the credential; nothing with a wrong password.
    allocates(&urls[0], &username, &password, Duration::from_secs(20)).await;
    allocate(&urls[1], &username, &password)
        .await
        .unwrap_or_else(|e| panic!("TCP: {e}"));
    let wrong = allocate(&urls[0], &username, "d3JvbmcgcGFzc3dvcmQ=").await;
    assert!(wrong.is_err_and(|e| e.contains("Cannot complete Allocation")));

    // A credential signed with the live secret whose expiry has passed is refused.
    let db = Db::connect(&fx.db.url, 2).await.expect("database");
    let mut c = db.conn().await.expect("conn");
    let stored = turn::secrets::all(&mut c).await.expect("secrets");
    let secret = turn::secrets::minting(&stored, onda_control_plane::db::now_millis())
        .expect("a secret")
        .secret
        .clone();
    let (u, p) = turn::credential(&secret, &format!("{tenant}.fan-1"), expiry);
    assert_eq!(
        (&u, &p),
        (&username, &password),
        "the API's credential is this"
    );
    let (u, p) = turn::credential(&secret, &format!("{tenant}.fan-1"), before - 60);
    let expired = allocate(&urls[0], &u, &p).await;
    assert!(expired.is_err_and(|e| e.contains("Cannot complete Allocation")));

    // A new secret (as the leader's rotation makes) reaches coturn without a restart.
    let pid = coturn_pid(&fx).expect("coturn runs");
    let fresh = "a-rotated-secret-0123456789abcdef";
    sqlx::query("INSERT INTO turn_secrets (id, secret, created_ms) VALUES ($1, $2, $3)")
        .bind("turn_test_rotation")
        .bind(fresh)
        .bind(onda_control_plane::db::now_millis())
        .execute(&mut *c)
        .await
        .expect("insert a secret");
    let (u, p) = turn::credential(fresh, "someone", before + 600);
    allocates(&urls[0], &u, &p, Duration::from_secs(20)).await;
    assert_eq!(coturn_pid(&fx), Some(pid), "coturn was restarted");
    // The earlier secret still works: credentials made with it have not expired.
    allocate(&urls[0], &username, &password)
        .await
        .unwrap_or_else(|e| panic!("the earlier secret: {e}"));

    // Only tenants whose plan has calls get relays.
    let (s, basic) = fx
        .cp
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "Basic Co", "email": "b@example.com", "plan_id": "plan_basic"})),
        )
        .await;
    assert_eq!(s, 201, "{basic}");
    let (s, key) = fx
        .cp
        .call(
            Method::POST,
            &format!("/v1/tenants/{}/api-keys", basic["id"].as_str().expect("id")),
            Some(json!({"name": "k"})),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let key = key["secret"].as_str().expect("secret");
    let (s, _) = fx
        .cp
        .tenant_call(
            key,
            Method::PUT,
            "/v1/users/fan-b",
            Some(json!({"display_name": "B"})),
        )
        .await;
    assert!(s == 200 || s == 201);
    let (_, t) = fx
        .cp
        .tenant_call(key, Method::POST, "/v1/users/fan-b/tokens", Some(json!({})))
        .await;
    let basic_user = t["token"].as_str().expect("token");
    let (s, body) = fx
        .cp
        .tenant_call(basic_user, Method::GET, "/v1/me/ice-servers", None)
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.to_string().contains("features.calls"), "{body}");

    // Only user tokens get credentials.
    let key = fx.cp.tenant_key("Other").await;
    let (s, body) = fx
        .cp
        .tenant_call(&key, Method::GET, "/v1/me/ice-servers", None)
        .await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = fx
        .cp
        .tenant_call("", Method::GET, "/v1/me/ice-servers", None)
        .await;
    assert_eq!(s, 401);
    let long = "x".repeat(65);
    let (s, body): (u16, Value) = fx
        .cp
        .tenant_call(
            &token,
            Method::GET,
            &format!("/v1/me/ice-servers?region={long}"),
            None,
        )
        .await;
    assert_eq!(s, 400, "{body}");
}

/// SIGKILL of coturn: the agent starts it again, and relays work again; SIGTERM of the agent
/// stops coturn with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_starts_coturn_again_when_it_is_killed_and_stops_it_with_itself() {
    let fx = turn_cluster(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    let urls = onda_tests::turn::advertised(&fx.cp).await;
    let (_, token) = user(&fx.cp, "fan-2").await;
    let (_, ice) = fx
        .cp
        .tenant_call(&token, Method::GET, "/v1/me/ice-servers", None)
        .await;
    let s = &ice["iceServers"][0];
    let (username, password) = (
        s["username"].as_str().expect("username"),
        s["credential"].as_str().expect("credential"),
    );
    allocates(&urls[0], username, password, Duration::from_secs(20)).await;
    let pid = coturn_pid(&fx).expect("coturn runs");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill coturn");
    let again = wait_for("coturn started again", Duration::from_secs(20), || async {
        coturn_pid(&fx).filter(|p| *p != pid)
    })
    .await;
    allocates(&urls[0], username, password, Duration::from_secs(20)).await;
    assert_eq!(coturn_pid(&fx), Some(again));
    let metrics = node_metrics(&fx.agents[0]).await;
    assert!(metrics.contains("onda_agent_turn_up 1"), "{metrics}");
    assert!(
        metrics.contains("onda_agent_turn_restarts_total 1"),
        "{metrics}"
    );

    // An agent that stops stops its coturn.
    let mut fx = fx;
    fx.agents[0].proc.terminate();
    let status = fx.agents[0].proc.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "the agent stopped with {status}");
    let stat = format!("/proc/{again}/stat");
    // Gone, or a zombie until the orphan is reaped: no longer running either way.
    wait_for(
        "coturn gone with its agent",
        Duration::from_secs(5),
        || async {
            let s = std::fs::read_to_string(&stat).unwrap_or_default();
            (s.is_empty() || s.contains(") Z ")).then_some(())
        },
    )
    .await;
}

/// With a certificate the node also advertises `turns:` and coturn relays over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_coturn_relays_over_tls_too() {
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed_cert(certs.path());
    let tls_port = free_udp_tcp_port();
    let more = [
        ("ONDA_TURN_TLS_PORT", tls_port.to_string()),
        ("ONDA_TURN_CERT", cert.display().to_string()),
        ("ONDA_TURN_KEY", key.display().to_string()),
    ];
    let fx = turn_cluster_with(
        Backend::Sqlite,
        more.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    )
    .await
    .expect("SQLite is always there");
    let urls = onda_tests::turn::advertised(&fx.cp).await;
    assert_eq!(urls.len(), 3, "{urls:?}");
    assert_eq!(urls[2], format!("turns:127.0.0.1:{tls_port}?transport=tcp"));
    let (_, token) = user(&fx.cp, "fan-3").await;
    let (_, ice) = fx
        .cp
        .tenant_call(&token, Method::GET, "/v1/me/ice-servers", None)
        .await;
    let s = &ice["iceServers"][0];
    assert_eq!(s["urls"], json!(urls));
    let (username, password) = (
        s["username"].as_str().expect("username"),
        s["credential"].as_str().expect("credential"),
    );
    allocates(&urls[2], username, password, Duration::from_secs(60)).await;
    let wrong = allocate(&urls[2], username, "d3JvbmcgcGFzc3dvcmQ=").await;
    assert!(wrong.is_err_and(|e| e.contains("Cannot complete Allocation")));
}

/// The production peer policy (`turn.allow_private_peers` off): coturn allocates, but refuses
/// to relay to a loopback peer (here the other client's relay address on 127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_relays_refuse_loopback_peers() {
    let more = vec![(
        "ONDA_TURN_ALLOW_PRIVATE_PEERS".to_string(),
        "false".to_string(),
    )];
    let fx = turn_cluster_with(Backend::Sqlite, more)
        .await
        .expect("SQLite is always there");
    let urls = onda_tests::turn::advertised(&fx.cp).await;
    let (_, token) = user(&fx.cp, "fan-4").await;
    let (_, ice) = fx
        .cp
        .tenant_call(&token, Method::GET, "/v1/me/ice-servers", None)
        .await;
    let s = &ice["iceServers"][0];
    let (username, password) = (
        s["username"].as_str().expect("username"),
        s["credential"].as_str().expect("credential"),
    );
    // Until the node has the secrets the allocation itself fails; then the peer is refused.
    let refused = wait_for(
        "a refused loopback peer",
        Duration::from_secs(20),
        || async {
            let e = allocate(&urls[0], username, password).await.err()?;
            e.contains("403 (Forbidden IP)").then_some(e)
        },
    )
    .await;
    assert!(!refused.contains("Cannot complete Allocation"), "{refused}");
}

/// A call over the gateway hands each party the node's relays with a credential of their own
/// (the caller in `initiate-call`'s ack, the creator in `incoming-call`), and coturn relays
/// with each.
async fn a_calls_parties_get_relays_of_the_node_that_coturn_accepts(backend: Backend) {
    let Some(fx) = turn_cluster(backend).await else {
        return;
    };
    let urls = onda_tests::turn::advertised(&fx.cp).await;
    let key = fx.cp.tenant_key("Calls with relays").await;
    let (_, me) = fx.cp.tenant_call(&key, Method::GET, "/v1/me", None).await;
    let tenant = me["tenant"]["id"].as_str().expect("tenant id").to_string();
    let mut tokens = Vec::new();
    for (id, creator) in [("fan", false), ("star", true)] {
        let body = json!({"display_name": id, "creator": creator,
                          "available_for_calls": creator, "call_price_per_minute": 10});
        let body = if creator {
            body
        } else {
            json!({"display_name": id})
        };
        let (s, v) = fx
            .cp
            .tenant_call(&key, Method::PUT, &format!("/v1/users/{id}"), Some(body))
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, t) = fx
            .cp
            .tenant_call(
                &key,
                Method::POST,
                &format!("/v1/users/{id}/tokens"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        tokens.push(t["token"].as_str().expect("token").to_string());
    }
    let (fan, star) = (&tokens[0], &tokens[1]);
    fx.cp.credit(&key, "fan", 100).await;

    let mut sio = onda_tests::realtime::Sio::start(&fx.cp.api).await;
    sio.connect("fan", fan).await.expect("fan connects");
    sio.connect("star", star).await.expect("star connects");
    let ack = sio
        .emit("fan", "initiate-call", json!({"receiverId": "star"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let incoming = sio.event("star", "incoming-call").await;
    for (servers, who) in [
        (&ack["iceServers"], "fan"),
        (&incoming["iceServers"], "star"),
    ] {
        let server = &servers[0];
        assert_eq!(server["urls"], json!(urls), "{servers}");
        let username = server["username"].as_str().expect("username");
        assert_eq!(
            username.split_once(':').map(|(_, u)| u.to_string()),
            Some(format!("{tenant}.{who}")),
            "each party's own credential"
        );
        let password = server["credential"].as_str().expect("credential");
        allocates(&urls[0], username, password, Duration::from_secs(20)).await;
    }
}

/// Relayed bytes of the tenant's usage lines in coturn's log (as the agent wrote it on): the
/// sum of `rb + sb` of the `usage:` lines whose username is the tenant's.
fn logged_bytes(fx: &ClusterFixture, tenant: &str) -> u64 {
    let path = fx.agents[0].proc.path().join("state/turn/turnserver.log");
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let n = |l: &str, key: &str| -> u64 {
        l.split(key)
            .nth(1)
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.contains(": usage: ") && l.contains(&format!(":{tenant}.")))
        .map(|l| n(l, " rb=") + n(l, " sb="))
        .sum()
}

/// The tenant's relayed bytes on `GET /v1/realtime/usage` (read as the admin).
async fn usage_bytes(cp: &ControlPlane, tenant: &str) -> u64 {
    let (s, usage) = cp
        .call(
            Method::GET,
            &format!("/v1/realtime/usage?tenant_id={tenant}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{usage}");
    usage["total"]["turn_bytes"].as_u64().expect("turn_bytes")
}

/// A tenant's user relays known traffic through the node's coturn with credentials from the
/// API; the agent meters it from coturn's usage lines into its usage reports, and the tenant's
/// usage shows it (and another tenant's none), exactly what coturn logged, within a stated
/// tolerance of what the client sent; the draft invoice prices it. A restart of the agent
/// counts nothing twice.
async fn relayed_bytes_are_metered_onto_the_tenants_usage_and_invoice_once(backend: Backend) {
    let Some(mut fx) = turn_cluster(backend).await else {
        return;
    };
    let urls = onda_tests::turn::advertised(&fx.cp).await;
    let (tenant, token) = user(&fx.cp, "fan-1").await;
    let (other, _) = user(&fx.cp, "fan-2").await;
    // The relay is billed at 1000.00 a GB beyond none included: a micro-unit per byte.
    let (s, plan) = fx
        .cp
        .call(
            Method::PATCH,
            "/v1/plans/plan_premium",
            Some(json!({"prices": {"included_turn_gb": 0,
                                   "overage_per_turn_gb_micros": 1_000_000_000u64}})),
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    let (s, ice) = fx
        .cp
        .tenant_call(&token, Method::GET, "/v1/me/ice-servers", None)
        .await;
    assert_eq!(s, 200, "{ice}");
    let server = &ice["iceServers"][0];
    let (username, password) = (
        server["username"].as_str().expect("username"),
        server["credential"].as_str().expect("credential"),
    );
    // The node has the secrets a moment after it is ready.
    allocates(&urls[0], username, password, Duration::from_secs(20)).await;
    let before = wait_for(
        "the first relay's bytes on the usage",
        Duration::from_secs(30),
        || async {
            let b = usage_bytes(&fx.cp, &tenant).await;
            (b > 0 && b == logged_bytes(&fx, &tenant)).then_some(b)
        },
    )
    .await;
    // 100 messages of 1000 bytes each way per client pair over UDP.
    let relayed = relay(&urls[0], username, password, 100, Some(1000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let payload = relayed.sent_bytes + relayed.received_bytes;
    assert!(payload >= 400_000, "{relayed:?}");
    // Each message enters the relay from one client and leaves it to the other: the usage
    // lines count it in (rb) and out (sb), plus the TURN framing and the allocations' own
    // requests (a run measured 809,736 bytes for 800,000 of payload). Tolerance: at most 2 %
    // below (a datagram lost on loopback) and 5 % above the payload.
    let metered = wait_for(
        "the relayed bytes on the tenant's usage, as coturn logged them",
        Duration::from_secs(30),
        || async {
            let logged = logged_bytes(&fx, &tenant);
            let b = usage_bytes(&fx.cp, &tenant).await;
            (logged >= before + payload * 98 / 100 && b == logged).then_some(b - before)
        },
    )
    .await;
    assert!(
        (payload * 98 / 100..=payload * 105 / 100).contains(&metered),
        "{metered} bytes metered for {relayed:?}"
    );
    assert_eq!(usage_bytes(&fx.cp, &other).await, 0, "another tenant's");
    let metrics = node_metrics(&fx.agents[0]).await;
    assert!(
        metrics.contains("onda_agent_turn_usage_lines_total{result=\"counted\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("onda_agent_turn_usage_lines_total{result=\"unparsed\"}"),
        "{metrics}"
    );

    // The running month's draft invoice prices the bytes: a micro-unit each (what the usage
    // showed when the run began, or more had arrived by then).
    let period =
        onda_control_plane::billing::Period::containing(onda_control_plane::db::now_millis())
            .to_string();
    let low = usage_bytes(&fx.cp, &tenant).await;
    let (s, run) = fx
        .cp
        .call(
            Method::POST,
            "/v1/billing/runs",
            Some(json!({"period": period})),
        )
        .await;
    assert_eq!(s, 200, "{run}");
    let high = usage_bytes(&fx.cp, &tenant).await;
    let (s, invoices) = fx
        .cp
        .call(
            Method::GET,
            &format!("/v1/invoices?tenant_id={tenant}&period={period}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{invoices}");
    let line = invoices["items"][0]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["kind"] == "turn_bytes_overage")
        .unwrap_or_else(|| panic!("a TURN line in {invoices}"))
        .clone();
    assert_eq!(line["unit"], "GB", "{line}");
    let amount = line["amount_micros"].as_u64().expect("amount");
    assert!((low..=high).contains(&amount), "{low}..={high}: {line}");

    // A restart of the agent counts nothing again: it stops (its last report sealed in the
    // spool, and sent again by the next run if this one had no ack for it), and starts on its
    // spool with a new run of coturn; the usage is what both runs of coturn logged, each line
    // once.
    let total = usage_bytes(&fx.cp, &tenant).await;
    fx.agents[0].proc.terminate();
    let status = fx.agents[0].proc.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "the agent stopped with {status}");
    fx.restart_agent(0).await;
    fx.wait_ready(1, Duration::from_secs(30)).await;
    allocates(&urls[0], username, password, Duration::from_secs(20)).await;
    wait_for(
        "the relay after the restart on the usage, once",
        Duration::from_secs(30),
        || async {
            let b = usage_bytes(&fx.cp, &tenant).await;
            (b > total && b == logged_bytes(&fx, &tenant)).then_some(())
        },
    )
    .await;
}

/// What a node's `/metrics` says now.
async fn node_metrics(agent: &onda_tests::cluster::Agent) -> String {
    onda_shared::http::client()
        .get(format!("{}/metrics", agent.edge_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

//! Helpers of the realtime benchmarks (`bench-realtime`, `bench-live-chat`): their knobs, end
//! users made and their tokens minted through the API in parallel, the CPU of PostgreSQL's
//! backends, the open-file limit raised for thousands of sockets, and the peer servers (Node.js
//! socket.io, socketioxide alone).

use crate::bench::tree_cpu_seconds;
use crate::db::{Backend, TestDb, postgres_admin_url};
use serde_json::{Value, json};
use sqlx::Connection as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A whole number from the environment variable `name`, or `default`; anything else ends the
/// run with a sentence.
pub fn knob(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not a whole number");
            std::process::exit(2);
        }),
        Err(_) => default,
    }
}

/// Raises the open-file limit to its hard maximum; answers the limit now.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// CPU seconds of each backend of PostgreSQL connected to `database`, by pid.
pub async fn pg_backends_cpu(database: &str, ticks: f64) -> HashMap<u32, f64> {
    let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&postgres_admin_url()).await else {
        return HashMap::new();
    };
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    let _ = conn.close().await;
    pids.into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .map(|p| (p, tree_cpu_seconds(p, ticks)))
        .collect()
}

/// CPU the backends used since `before` (a backend that came and went meanwhile is missed).
pub fn pg_cpu_since(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// Makes end user `id` and mints a token for them: the `POST /v1/users/{id}/tokens` answer.
pub async fn make_user(http: &reqwest::Client, api: &str, key: &str, id: &str) -> Value {
    let put = http
        .put(format!("{api}/v1/users/{id}"))
        .bearer_auth(key)
        .json(&json!({"display_name": format!("Fan {id}")}))
        .send()
        .await
        .expect("PUT /v1/users");
    assert!(put.status().is_success(), "PUT user {id}: {}", put.status());
    let minted = http
        .post(format!("{api}/v1/users/{id}/tokens"))
        .bearer_auth(key)
        .json(&json!({}))
        .send()
        .await
        .expect("POST tokens");
    assert!(
        minted.status().is_success(),
        "token of {id}: {}",
        minted.status()
    );
    minted.json().await.expect("a token")
}

/// Makes the users `ids` of the tenant of `key` and mints a token for each, 32 requests at a
/// time (the first alone, so the tenant's managed signing key exists before the rush):
/// (tokens in the order of `ids`, the signing key's id).
pub async fn mint_users(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    ids: &[String],
) -> (Vec<String>, String) {
    let Some(id0) = ids.first() else {
        return (Vec::new(), String::new());
    };
    let first = make_user(http, api, key, id0).await;
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (ids, next, key) = (ids.clone(), next.clone(), key.to_string());
        let (api, http) = (api.to_string(), http.clone());
        tasks.spawn(async move {
            let mut minted = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(id) = ids.get(i) else {
                    return minted;
                };
                minted.push((i, make_user(&http, &api, &key, id).await));
            }
        });
    }
    let mut tokens = vec![String::new(); ids.len()];
    let kid = first["kid"].as_str().expect("kid").to_string();
    tokens[0] = first["token"].as_str().expect("token").to_string();
    while let Some(done) = tasks.join_next().await {
        for (i, t) in done.expect("user maker") {
            tokens[i] = t["token"].as_str().expect("token").to_string();
            assert_eq!(t["kid"].as_str(), Some(kid.as_str()), "one signing key");
        }
    }
    (tokens, kid)
}

/// What checks the tokens of [`mint_users`]: (the tenant, their `iss`; the secret of the
/// tenant's managed signing key `kid`, read from Onda's database at `db_url`), so a peer server
/// accepts the very same tokens.
pub async fn token_signer(db_url: &str, tokens: &[String], kid: &str) -> (String, String) {
    use base64::Engine as _;
    let claims = tokens
        .first()
        .and_then(|t| t.split('.').nth(1))
        .and_then(|c| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
        })
        .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
        .unwrap_or_default();
    let issuer = claims["iss"].as_str().unwrap_or_default().to_string();
    let mut conn = sqlx::postgres::PgConnection::connect(db_url)
        .await
        .expect("Onda's database");
    let secret: String = sqlx::query_scalar("SELECT secret FROM signing_keys WHERE id = $1")
        .bind(kid)
        .fetch_one(&mut conn)
        .await
        .expect("the managed signing key");
    let _ = conn.close().await;
    (issuer, secret)
}

/// A peer server of the benchmarks: the same events, the same tokens, its messages in a
/// PostgreSQL database of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// tests/bench/realtime-node/server.mjs: socket.io 4.8 on Node.js, what creator platforms
    /// run today.
    Node,
    /// `sio-peer` (tests/src/bin/sio-peer.rs): the same events on socketioxide as Onda's
    /// gateway configures it, and nothing else of Onda's: the engine's own cost.
    Socketioxide,
}

impl PeerKind {
    /// Its name in the reports.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Node => "node socket.io",
            PeerKind::Socketioxide => "socketioxide alone",
        }
    }

    /// The command that runs it; ends the run with a sentence when it is not there (the
    /// benchmarks' scripts run `npm ci` and build `sio-peer`).
    fn command(self) -> tokio::process::Command {
        match self {
            PeerKind::Node => {
                let dir =
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/realtime-node");
                if !dir.join("node_modules/socket.io").is_dir() {
                    eprintln!(
                        "{} has no node_modules: run the benchmark's script (it runs npm ci)",
                        dir.display()
                    );
                    std::process::exit(2);
                }
                let mut c = tokio::process::Command::new("node");
                c.arg("server.mjs")
                    .current_dir(&dir)
                    .env("NODE_ENV", "production");
                c
            }
            PeerKind::Socketioxide => {
                // Built beside the benchmark's own binary.
                let bin = std::env::current_exe()
                    .map(|e| e.with_file_name("sio-peer"))
                    .unwrap_or_default();
                if !bin.is_file() {
                    eprintln!(
                        "{} is missing: run the benchmark's script (it builds sio-peer)",
                        bin.display()
                    );
                    std::process::exit(2);
                }
                tokio::process::Command::new(bin)
            }
        }
    }
}

/// A running peer server on a free port; killed when dropped.
pub struct Peer {
    child: tokio::process::Child,
    pub kind: PeerKind,
    pub url: String,
    pub db: TestDb,
}

impl Peer {
    /// Starts `kind` with the tokens' issuer and secret (see [`token_signer`]).
    pub async fn start(kind: PeerKind, issuer: &str, secret: &str) -> Peer {
        use tokio::io::AsyncBufReadExt as _;
        let db = TestDb::new(Backend::Postgres)
            .await
            .expect("PostgreSQL for the peer server");
        let mut child = kind
            .command()
            .env("DATABASE_URL", &db.url)
            .env("JWT_SECRET", secret)
            .env("JWT_ISSUER", issuer)
            .env("PORT", "0")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the peer server runs");
        let out = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(out).lines();
        let port = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(p) = l.strip_prefix("listening on ") {
                    return p.trim().to_string();
                }
            }
            panic!("the {} peer exited before it listened", kind.name());
        })
        .await
        .expect("the peer server listens within 30 s");
        // Keep draining its stdout, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Peer {
            child,
            kind,
            url: format!("http://127.0.0.1:{port}"),
            db,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the peer server runs")
    }

    /// The name of its database (for [`pg_backends_cpu`]).
    pub fn database(&self) -> String {
        database_name(&self.db.url)
    }
}

/// The database's name in a PostgreSQL URL.
pub fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

/// A histogram's `_sum` and `_count` in the server's `/metrics` at `api` (0 and 0 when it is not
/// there, or the server does not answer).
pub async fn histogram_totals(http: &reqwest::Client, api: &str, name: &str) -> (f64, f64) {
    let metrics = match http.get(format!("{api}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let series = |suffix: &str| {
        let series = format!("{name}{suffix}");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (series("_sum"), series("_count"))
}

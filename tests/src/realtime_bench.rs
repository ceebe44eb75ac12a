//! Helpers of the realtime benchmarks (`bench-realtime`, `bench-live-chat`): their knobs, end
//! users made and their tokens minted through the API in parallel, the CPU of PostgreSQL's
//! backends, and the open-file limit raised for thousands of sockets.

use crate::bench::tree_cpu_seconds;
use crate::db::postgres_admin_url;
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

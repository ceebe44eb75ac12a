//! Benchmark (not a test): 1-to-1 calls' signalling on Onda's gateway.
//!
//! `onda control-plane` (release build, `ONDA_BIN`) on a fresh PostgreSQL database, a tenant on
//! Premium, `BENCH_CALLS` creators (1000) who take calls at 1 a minute and as many fans with
//! credit, all connected (`onda_tests::sioconn`, one WebSocket each). Then every fan calls their
//! creator, `BENCH_CALL_RATE` new calls a second (200): `initiate-call`, the creator's
//! `incoming-call`, `accept-call`, `call-state in_progress`, an offer and an answer, and
//! `BENCH_CANDIDATES` ICE candidates (10) each way through `signal` — the signalling of a real
//! WebRTC call, without media. Set-up latency is from `initiate-call` to the last candidate
//! received. With every call in progress at once the run holds `BENCH_HOLD_SECONDS` (10) to
//! measure what open calls cost (the calls' clock reads them every 500 ms), then the fans hang
//! up at the same rate: tear-down latency is from `end-call` to the creator's `call-state
//! ended`.
//! Reported: latencies p50/p99, the server's, PostgreSQL's and the generator's CPU-seconds per
//! phase, and the records checked exactly (every call hung up, one minute charged, the ledger
//! balanced). Exit 1 when a call fails or a total is off. Run it with `scripts/bench-calls.sh`.

#![forbid(unsafe_code)]

use onda_tests::bench::{clock_ticks, tree_cpu_seconds, tree_rss_kib};
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::realtime_bench::{knob, mint_users, pg_backends_cpu, pg_cpu_since, raise_nofile};
use onda_tests::sioconn::Conn;
use onda_tests::sioload::percentile;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-calls-0123456";
/// A step of a call may take this long before the call counts as failed.
const STEP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Knobs {
    calls: usize,
    ramp: usize,
    call_rate: usize,
    candidates: usize,
    hold: u64,
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            calls: knob("BENCH_CALLS", 1000),
            ramp: knob("BENCH_RAMP", 500),
            call_rate: knob("BENCH_CALL_RATE", 200).max(1),
            candidates: knob("BENCH_CANDIDATES", 10),
            hold: knob("BENCH_HOLD_SECONDS", 10) as u64,
        }
    }
}

/// CPU-seconds of the server, PostgreSQL's backends and this generator, read together.
struct Cpu {
    server: f64,
    pg: HashMap<u32, f64>,
    total: f64,
}

struct Onda {
    api: String,
    pid: u32,
    database: String,
    key: String,
    http: reqwest::Client,
}

impl Onda {
    async fn cpu(&self) -> Cpu {
        let ticks = clock_ticks();
        Cpu {
            server: tree_cpu_seconds(self.pid, ticks),
            pg: pg_backends_cpu(&self.database, ticks).await,
            total: tree_cpu_seconds(std::process::id(), ticks),
        }
    }

    /// (server, PostgreSQL, generator) CPU-seconds since `before`.
    async fn since(&self, before: &Cpu) -> (f64, f64, f64) {
        let now = self.cpu().await;
        let server = now.server - before.server;
        (
            server,
            pg_cpu_since(&before.pg, &now.pg),
            (now.total - before.total) - server,
        )
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// Runs `f(i)` for every i below `n`, 32 at a time.
async fn parallel<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (f, next) = (f.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return;
                }
                f(i).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The tenant, its creators (taking calls at 1 a minute) and fans (credited), and everyone's
/// tokens: (creators' tokens, fans' tokens).
async fn setup(o: &Onda, k: &Knobs) -> (Vec<String>, Vec<String>) {
    let creators: Vec<String> = (0..k.calls).map(|i| format!("c{i:05}")).collect();
    let fans: Vec<String> = (0..k.calls).map(|i| format!("f{i:05}")).collect();
    let everyone: Vec<String> = creators.iter().chain(&fans).cloned().collect();
    let (tokens, _) = mint_users(&o.http, &o.api, &o.key, &everyone).await;
    let (api, key, http) = (o.api.clone(), o.key.clone(), o.http.clone());
    let ids = Arc::new((creators, fans));
    parallel(k.calls, move |i| {
        let (api, key, http, ids) = (api.clone(), key.clone(), http.clone(), ids.clone());
        async move {
            let put = http
                .put(format!("{api}/v1/users/{}", ids.0[i]))
                .bearer_auth(&key)
                .json(
                    &json!({"display_name": format!("Creator {i}"), "creator": true,
                              "available_for_calls": true, "call_price_per_minute": 1}),
                )
                .send()
                .await
                .expect("PUT creator");
            assert!(put.status().is_success(), "creator {i}: {}", put.status());
            let credit = http
                .post(format!("{api}/v1/users/{}/wallet/credits", ids.1[i]))
                .bearer_auth(&key)
                .header("idempotency-key", format!("credit-{i}"))
                .json(&json!({"amount": 100, "reference": format!("psp-{i}")}))
                .send()
                .await
                .expect("credit");
            assert_eq!(credit.status().as_u16(), 201, "credit {i}");
        }
    })
    .await;
    let fans_tokens = tokens[k.calls..].to_vec();
    let mut creators_tokens = tokens;
    creators_tokens.truncate(k.calls);
    (creators_tokens, fans_tokens)
}

/// Every token's connection, `ramp` new ones a second; None for one that failed.
async fn connect_all(api: &str, tokens: &[String], ramp: usize) -> Vec<Option<Conn>> {
    let mut tasks = tokio::task::JoinSet::new();
    let every = Duration::from_secs_f64(1.0 / ramp.max(1) as f64);
    for (i, t) in tokens.iter().enumerate() {
        let (api, t) = (api.to_string(), t.clone());
        tasks.spawn(async move { (i, Conn::connect(&api, &t, Duration::from_secs(60)).await) });
        tokio::time::sleep(every).await;
    }
    let mut out: Vec<Option<Conn>> = (0..tokens.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        match done.expect("connect task") {
            (i, Ok(c)) => out[i] = Some(c),
            (i, Err(e)) => eprintln!("connection {i}: {e}"),
        }
    }
    out
}

/// What one call's set-up measured: (ms to the creator's ring, ms to the last candidate).
type SetUp = (f64, f64);

/// One call's signalling, fan to creator, up to the last candidate each way.
async fn set_up(
    fan: &mut Conn,
    star: &mut Conn,
    (creator, candidates): (&str, usize),
) -> Result<(String, SetUp), String> {
    let t0 = Instant::now();
    let ack = fan
        .emit("initiate-call", json!({ "receiverId": creator }), STEP)
        .await?;
    let id = ack["callId"]
        .as_str()
        .filter(|_| ack["ok"] == true)
        .ok_or_else(|| format!("initiate-call: {ack}"))?
        .to_string();
    let is_call = |v: &Value| v["callId"] == id.as_str();
    star.event_where("incoming-call", is_call, STEP).await?;
    let rung = t0.elapsed().as_secs_f64() * 1000.0;
    let ack = star
        .emit("accept-call", json!({ "callId": id }), STEP)
        .await?;
    if ack["ok"] != true {
        return Err(format!("accept-call: {ack}"));
    }
    fan.event_where(
        "call-state",
        |v| is_call(v) && v["state"] == "in_progress",
        STEP,
    )
    .await?;
    let sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".repeat(40);
    fan.send(
        "signal",
        json!({ "callId": id, "signal": { "type": "offer", "sdp": sdp } }),
    );
    star.event_where("signal", is_call, STEP).await?;
    star.send(
        "signal",
        json!({ "callId": id, "signal": { "type": "answer", "sdp": sdp } }),
    );
    fan.event_where("signal", is_call, STEP).await?;
    for n in 0..candidates {
        let candidate = json!({ "candidate": format!(
            "candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host generation 0", 50_000 + n),
            "sdpMid": "0", "sdpMLineIndex": 0 });
        fan.send("signal", json!({ "callId": id, "signal": candidate }));
        star.send("signal", json!({ "callId": id, "signal": candidate }));
    }
    for _ in 0..candidates {
        fan.event_where("signal", is_call, STEP).await?;
        star.event_where("signal", is_call, STEP).await?;
    }
    Ok((id, (rung, t0.elapsed().as_secs_f64() * 1000.0)))
}

/// Hangs up: ms from `end-call` to the creator's `call-state ended`.
async fn tear_down(fan: &mut Conn, star: &mut Conn, id: &str) -> Result<f64, String> {
    let t0 = Instant::now();
    let ack = fan.emit("end-call", json!({ "callId": id }), STEP).await?;
    if ack["call"]["reason"] != "hung_up" {
        return Err(format!("end-call: {ack}"));
    }
    star.event_where(
        "call-state",
        |v| v["callId"] == id && v["state"] == "ended",
        STEP,
    )
    .await?;
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

fn summary(name: &str, ms: &mut [f64]) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: {} calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// Every call set up, held, and torn down; false when one failed.
async fn run(o: &Onda, k: &Knobs, pairs: Vec<(Conn, Conn)>) -> bool {
    let n = pairs.len();
    let (hold_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    let every = Duration::from_secs_f64(1.0 / k.call_rate as f64);
    let before = o.cpu().await;
    let t0 = Instant::now();
    for (i, (mut fan, mut star)) in pairs.into_iter().enumerate() {
        let (up, mut hold, candidates) = (up_tx.clone(), hold_tx.subscribe(), k.candidates);
        tasks.spawn(async move {
            let creator = format!("c{i:05}");
            let set = set_up(&mut fan, &mut star, (&creator, candidates)).await;
            let _ = up.send(set.as_ref().map(|(_, m)| *m).map_err(Clone::clone));
            let (id, _) = set?;
            let _ = hold.recv().await;
            // Hung up at the rate they were made, as calls end spread out.
            tokio::time::sleep(every * u32::try_from(i).unwrap_or(u32::MAX)).await;
            tear_down(&mut fan, &mut star, &id).await
        });
        tokio::time::sleep(every).await;
    }
    drop(up_tx);
    let (mut rung, mut setup, mut failed) = (Vec::new(), Vec::new(), 0);
    // Each task holds its sender until it has torn its call down: count the answers.
    for _ in 0..n {
        let Some(r) = up_rx.recv().await else { break };
        match r {
            Ok((ring, all)) => {
                rung.push(ring);
                setup.push(all);
            }
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("a call's set-up failed: {e}");
                }
            }
        }
    }
    let (cpu, pg, generator) = o.since(&before).await;
    println!(
        "set-up of {n} calls in {:.1} s: {} up, {failed} failed; server {cpu:.2} CPU-s, PostgreSQL {pg:.2}, generator {generator:.2}",
        t0.elapsed().as_secs_f64(),
        setup.len()
    );
    summary("initiate-call to the creator's ring", &mut rung);
    summary("initiate-call to the last candidate (set-up)", &mut setup);
    let in_progress = match o.http.get(format!("{}/metrics", o.api)).send().await {
        Ok(r) => r.text().await.unwrap_or_default().lines().find_map(|l| {
            l.strip_prefix("onda_calls_in_progress ")
                .map(str::to_string)
        }),
        Err(_) => None,
    };
    println!(
        "calls in progress (onda_calls_in_progress): {}; server RSS {} MiB",
        in_progress.as_deref().unwrap_or("?"),
        tree_rss_kib(o.pid) / 1024
    );
    let before = o.cpu().await;
    tokio::time::sleep(Duration::from_secs(k.hold)).await; // the measured window itself
    let (cpu, pg, _) = o.since(&before).await;
    println!(
        "holding {} calls in progress for {} s: server {cpu:.2} CPU-s ({:.1} % of a core), PostgreSQL {pg:.2}",
        setup.len(),
        k.hold,
        cpu / k.hold as f64 * 100.0
    );
    let before = o.cpu().await;
    let t0 = Instant::now();
    let _ = hold_tx.send(());
    let mut down = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("call task") {
            Ok(ms) => down.push(ms),
            Err(e) => {
                failed += 1;
                eprintln!("a call's tear-down failed: {e}");
            }
        }
    }
    let (cpu, pg, generator) = o.since(&before).await;
    println!(
        "tear-down in {:.1} s: server {cpu:.2} CPU-s, PostgreSQL {pg:.2}, generator {generator:.2}",
        t0.elapsed().as_secs_f64()
    );
    summary("end-call to the creator's ended (tear-down)", &mut down);
    failed == 0 && down.len() == n
}

/// Every call is listed, hung up, one minute charged; the ledger balances.
async fn records_exact(o: &Onda, n: usize) -> bool {
    let mut calls = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = o
            .call(
                Method::GET,
                &format!("/v1/calls?limit=100&cursor={cursor}"),
                None,
            )
            .await;
        calls.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let right = calls
        .iter()
        .filter(|c| c["reason"] == "hung_up" && c["unitsCharged"] == 1 && c["amount"] == 1)
        .count();
    let (_, check) = o.call(Method::GET, "/v1/ledger/check", None).await;
    println!(
        "records: {} calls, {right} hung up with one minute charged; ledger balanced: {}",
        calls.len(),
        check["ok"]
    );
    calls.len() == n && right == n && check["ok"] == true
}

async fn bench() -> bool {
    let k = Knobs::from_env();
    if std::env::var_os("ONDA_BIN").is_none() {
        eprintln!("ONDA_BIN is not set: run scripts/bench-calls.sh (it builds the release binary)");
        std::process::exit(2);
    }
    println!("calls benchmark: {k:?}, open file limit {}", raise_nofile());
    let Some(fx) = ClusterFixture::start_on(ClusterSpec {
        admin_token: ADMIN,
        backend: Backend::Postgres,
        ..ClusterSpec::default()
    })
    .await
    else {
        eprintln!("PostgreSQL is unreachable: the benchmark needs it");
        return false;
    };
    let (s, plan) = fx
        .cp
        .call(
            Method::PATCH,
            "/v1/plans/plan_premium",
            Some(json!({ "limits": { "max_realtime_connections": 2 * k.calls + 100 } })),
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    let o = Onda {
        api: fx.cp.api.clone(),
        pid: fx.cp.proc.pid(),
        database: fx.db.url.rsplit('/').next().unwrap_or_default().to_string(),
        key: fx.cp.tenant_key("Bench Calls").await,
        http: fx.cp.http.clone(),
    };
    let t = Instant::now();
    let (creators, fans) = setup(&o, &k).await;
    println!(
        "{} creators and {} fans made, credited and given tokens in {:.1} s",
        creators.len(),
        fans.len(),
        t.elapsed().as_secs_f64()
    );
    let stars = connect_all(&o.api, &creators, k.ramp).await;
    let fans = connect_all(&o.api, &fans, k.ramp).await;
    let pairs: Vec<(Conn, Conn)> = fans
        .into_iter()
        .zip(stars)
        .filter_map(|(f, s)| Some((f?, s?)))
        .collect();
    println!(
        "{} pairs connected; server RSS {} MiB",
        pairs.len(),
        tree_rss_kib(o.pid) / 1024
    );
    let connected = pairs.len() == k.calls;
    let ran = run(&o, &k, pairs).await;
    let exact = records_exact(&o, k.calls).await;
    let ok = connected && ran && exact;
    println!(
        "every call set up, billed and torn down: {}",
        if ok { "yes" } else { "NO" }
    );
    ok
}

fn main() {
    onda_tests::bench::main_of(bench());
}

//! Benchmark (not a test): a live stream's chat on Onda's gateway, and its ledger under tips.
//!
//! `onda control-plane` (release build, `ONDA_BIN`) on a fresh PostgreSQL database, a tenant on
//! Premium, a creator and a public stream of theirs, `BENCH_VIEWERS` end users (10,000) made
//! and their tokens minted through the API, connected by the realtime benchmark's load
//! generator (`onda_tests::sioload`) at `BENCH_RAMP` a second, all in the stream's room:
//! - **room**: `BENCH_CHAT_RATE` chat messages a second (20, from `BENCH_SENDERS` viewers in
//!   turn, each well under the chat's burst limit) and `BENCH_TIP_RATE` tips a second (5, each
//!   shown in the chat) for `BENCH_SECONDS` (30) after a 3 s warm-up: delivery latency p50/p99
//!   from the send time stamped in each message, deliveries against the exact number expected
//!   (a chat message reaches every other viewer, a tip every viewer: none lost, none twice), the
//!   server's and PostgreSQL's CPU-seconds.
//!   `BENCH_ROOM=0` skips this phase (to measure the ledger alone, in a smaller room).
//! - **ledger**: `BENCH_LEDGER_RATE` tips a second (500, from as many viewers, one a second
//!   each, amounts 1 to 9) for `BENCH_LEDGER_SECONDS` (10), not in a chat: tips acknowledged a
//!   second. A tip the server could not take in time is refused (`internal`, try again); every
//!   tip is then sent again over REST with its idempotency key, as a client retries, and the
//!   totals are checked exactly against every tip sent: the creator's earnings, every tipper's
//!   wallet, `GET /v1/ledger/check` (a tip committed twice, or lost, shows here).
//! - **peers**: the room again on the realtime benchmark's peers once Onda has stopped, with
//!   the same viewers, tokens and rate (chat and tips alike as `stream-message`: the peers have
//!   no ledger): socketioxide alone (`sio-peer`, the engine under Onda's gateway doing only the
//!   Node server's work; `BENCH_ENGINE=0` leaves it out), then the Node.js peer (socket.io 4.8,
//!   tests/bench/realtime-node; `BENCH_NODE=0`), and the ratios in this run.
//!
//! The run fails (exit 1) when a connection or a join fails, a message or tip is refused or not
//! acknowledged, a delivery is lost or duplicated, or a total is off. Run it with
//! `scripts/bench-live-chat.sh`.

#![forbid(unsafe_code)]

use onda_tests::bench::{clock_ticks, tree_cpu_seconds, tree_rss_kib};
use onda_tests::cluster::ControlPlane;
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::realtime_bench::{
    Peer, PeerKind, histogram_totals, knob, mint_users, pg_backends_cpu, pg_cpu_since,
    raise_nofile, token_signer,
};
use onda_tests::sioload::{Emit, Measured, Pool, percentile};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-live-chat-0123";
/// What each tipper's wallet is credited with before the run.
const CREDIT: i64 = 100_000;
/// A tip in the room.
const ROOM_TIP: i64 = 100;

#[derive(Debug, Clone)]
struct Knobs {
    viewers: usize,
    ramp: usize,
    chat_rate: usize,
    tip_rate: usize,
    senders: usize,
    seconds: u64,
    /// Whether the room phase runs (`BENCH_ROOM`, 1; 0 skips it).
    room: bool,
    warmup: u64,
    ledger_rate: usize,
    ledger_seconds: u64,
}

impl Knobs {
    fn from_env() -> Knobs {
        let k = Knobs {
            viewers: knob("BENCH_VIEWERS", 10_000),
            // Handshakes of one tenant take its row lock in turn (the connection limit): 250 a
            // second stays clear of that queue, which this benchmark is not about.
            ramp: knob("BENCH_RAMP", 250).max(1),
            chat_rate: knob("BENCH_CHAT_RATE", 20).max(1),
            tip_rate: knob("BENCH_TIP_RATE", 5).max(1),
            senders: knob("BENCH_SENDERS", 60).max(1),
            seconds: knob("BENCH_SECONDS", 30).max(1) as u64,
            room: knob("BENCH_ROOM", 1) != 0,
            warmup: knob("BENCH_WARMUP_SECONDS", 3) as u64,
            ledger_rate: knob("BENCH_LEDGER_RATE", 500),
            ledger_seconds: knob("BENCH_LEDGER_SECONDS", 10) as u64,
        };
        // Viewers [0, ledger) tip in the ledger phase, the next `tippers` tip in the room, the
        // next `senders` chat.
        if k.ledger_rate + k.tippers() + k.senders > k.viewers {
            eprintln!("BENCH_LEDGER_RATE + tippers + BENCH_SENDERS must fit in BENCH_VIEWERS");
            std::process::exit(2);
        }
        k
    }

    /// Room tippers: each tips at most once every 10 s.
    fn tippers(&self) -> usize {
        self.tip_rate * 10
    }

    fn room_tipper(&self, n: usize) -> usize {
        self.ledger_rate + n % self.tippers()
    }

    fn sender(&self, n: usize) -> usize {
        self.ledger_rate + self.tippers() + n % self.senders
    }
}

/// Onda under test: its API, process, database, tenant and stream.
struct Setup {
    api: String,
    pid: u32,
    database: String,
    key: String,
    stream: String,
    ids: Vec<String>,
    tokens: Vec<String>,
    /// The tenant's managed signing key, which signed every token.
    kid: String,
    fee_bps: i64,
}

/// Makes the tenant, its creator `star`, the stream, the viewers and the tippers' credit.
async fn setup(cp: &ControlPlane, database: String, k: &Knobs) -> Setup {
    let (s, plan) = cp
        .call(
            Method::PATCH,
            "/v1/plans/plan_premium",
            Some(json!({ "limits": { "max_realtime_connections": k.viewers + 100 } })),
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    let key = cp.tenant_key("Bench Live").await;
    let (s, v) = cp
        .tenant_call(
            &key,
            Method::PUT,
            "/v1/users/star",
            Some(json!({"display_name": "Star", "creator": true})),
        )
        .await;
    assert!(s == 201 || s == 200, "{v}");
    let (s, v) = cp
        .tenant_call(
            &key,
            Method::POST,
            "/v1/streams",
            Some(json!({"name": "Bench Show", "access": "public", "creator_id": "star"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let stream = v["id"].as_str().expect("stream id").to_string();
    let ids: Vec<String> = (0..k.viewers).map(|i| format!("v{i:05}")).collect();
    let t = Instant::now();
    let (tokens, kid) = mint_users(&cp.http, &cp.api, &key, &ids).await;
    println!(
        "{} viewers and tokens made through the API in {:.1} s",
        ids.len(),
        t.elapsed().as_secs_f64()
    );
    for id in &ids[..k.ledger_rate + k.tippers()] {
        let r = cp
            .http
            .post(format!("{}/v1/users/{id}/wallet/credits", cp.api))
            .bearer_auth(&key)
            .header("idempotency-key", format!("credit-{id}"))
            .json(&json!({"amount": CREDIT, "reference": format!("psp-{id}")}))
            .send()
            .await
            .expect("credit");
        assert_eq!(r.status().as_u16(), 201, "credit {id}");
    }
    let (_, me) = cp.tenant_call(&key, Method::GET, "/v1/me", None).await;
    let fee_bps = me["tenant"]["platform_fee_bps"].as_i64().unwrap_or(0);
    Setup {
        api: cp.api.clone(),
        pid: cp.proc.pid(),
        database,
        key,
        stream,
        ids,
        tokens,
        kid,
        fee_bps,
    }
}

/// Sends `rate` emits a second for `secs`, evenly spaced; `emit(n)` makes the n-th.
async fn paced(pool: &Pool, secs: u64, rate: usize, emit: impl Fn(usize) -> (usize, Emit)) {
    let start = Instant::now();
    let total = secs as usize * rate;
    for n in 0..total {
        let at = start + Duration::from_micros(n as u64 * 1_000_000 / rate as u64);
        tokio::time::sleep_until(at.into()).await;
        let (client, e) = emit(n);
        pool.emit(client, e);
    }
}

/// What one measured window gave.
struct Window {
    m: Measured,
    expected: u64,
    secs: f64,
    cpu_s: f64,
    pg_cpu_s: f64,
    /// The load generator's own CPU-seconds (this process, the server's tree left out): it
    /// shares the machine's two cores with the server.
    gen_cpu_s: f64,
    /// From the window's start to the last ack.
    acked_in: f64,
}

/// This process's CPU-seconds without the server it started.
fn generator_cpu(server: u32, ticks: f64) -> f64 {
    tree_cpu_seconds(std::process::id(), ticks) - tree_cpu_seconds(server, ticks)
}

impl Window {
    fn ok(&self) -> bool {
        self.m.ack_errors == 0 && self.m.acked == self.m.sent && self.m.delivered == self.expected
    }
}

fn chat(s: &Setup, tag: u32) -> Emit {
    Emit {
        event: "chat-message",
        payload: json!({ "streamId": s.stream }),
        stamp: Some(tag),
        stamp_field: "content",
    }
}

/// A tip: in the room its message carries the stamp; in the ledger phase it has none, so a
/// retry over REST sends exactly the same request.
fn tip(s: &Setup, tag: u32, n: usize, (amount, in_room): (i64, bool)) -> Emit {
    let mut payload = json!({
        "creatorId": "star",
        "amount": amount,
        "idempotencyKey": format!("bench-{tag}-{n}"),
    });
    if in_room {
        payload["streamId"] = json!(s.stream);
    }
    Emit {
        event: "send-tip",
        payload,
        stamp: Some(tag),
        stamp_field: if in_room { "message" } else { "" },
    }
}

/// Sends every ledger-phase tip again over REST with its key, 16 at a time, as clients retry
/// what was refused or unanswered: (answered 201, of them replays of a tip already committed).
async fn retry_ledger(http: &reqwest::Client, s: &Setup, k: &Knobs) -> (usize, usize) {
    let mut all = Vec::new();
    for (tag, secs) in [(3, k.warmup), (4, k.ledger_seconds)] {
        for n in 0..secs as usize * k.ledger_rate {
            let tipper = n % k.ledger_rate;
            all.push((tipper, format!("bench-{tag}-{n}"), ledger_amount(n)));
        }
    }
    let (mut ok, mut replayed) = (0, 0);
    for chunk in all.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for (tipper, key, amount) in chunk.iter().cloned() {
            let (http, api, token) = (http.clone(), s.api.clone(), s.tokens[tipper].clone());
            set.spawn(async move {
                let r = http
                    .post(format!("{api}/v1/me/tips"))
                    .bearer_auth(token)
                    .header("idempotency-key", key)
                    .json(&json!({"creatorId": "star", "amount": amount}))
                    .send()
                    .await
                    .ok()?;
                Some((
                    r.status().as_u16(),
                    r.headers().contains_key("idempotent-replayed"),
                ))
            });
        }
        for (status, again) in set.join_all().await.into_iter().flatten() {
            if status == 201 {
                ok += 1;
                replayed += usize::from(again);
            }
        }
    }
    (ok, replayed)
}

/// The room phase's emits: tips at `tip_rate` among `chat_rate` chat messages a second.
async fn room_traffic(pool: &Pool, k: &Knobs, s: &Setup, tag: u32, secs: u64) -> (u64, u64) {
    let per_sec = k.chat_rate + k.tip_rate;
    let tips_every = per_sec / k.tip_rate;
    let (mut chats, mut tips) = (0u64, 0u64);
    let mut plan = Vec::with_capacity(secs as usize * per_sec);
    for n in 0..secs as usize * per_sec {
        if n % tips_every == 0 && tips < secs * k.tip_rate as u64 {
            plan.push((k.room_tipper(tips as usize), true));
            tips += 1;
        } else {
            plan.push((k.sender(chats as usize), false));
            chats += 1;
        }
    }
    paced(pool, secs, per_sec, |n| {
        let (client, is_tip) = plan[n];
        if is_tip {
            (client, tip(s, tag, n, (ROOM_TIP, true)))
        } else {
            (client, chat(s, tag))
        }
    })
    .await;
    (chats, tips)
}

/// Waits (at most 30 s) for every ack and `expected` deliveries of the measured tag.
async fn settle(pool: &Pool, expected: impl Fn(&Measured) -> u64) -> (Measured, f64) {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    let mut m = pool.stats.snapshot();
    let mut acked_at = t;
    while (m.acked + m.ack_errors < m.sent || m.delivered < expected(&m))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = m.acked;
        m = pool.stats.snapshot();
        if m.acked > before {
            acked_at = Instant::now();
        }
    }
    // A moment more: a duplicate delivery would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (
        pool.stats.snapshot(),
        acked_at.duration_since(t).as_secs_f64(),
    )
}

/// The room phase, and how many tips it gave (warm-up included).
async fn room(pool: &Pool, k: &Knobs, s: &Setup) -> (Window, u64) {
    let ticks = clock_ticks();
    pool.stats.measure(2);
    let (_, warmup_tips) = room_traffic(pool, k, s, 1, k.warmup).await;
    let pg0 = pg_backends_cpu(&s.database, ticks).await;
    let cpu0 = tree_cpu_seconds(s.pid, ticks);
    let gen0 = generator_cpu(s.pid, ticks);
    let t0 = Instant::now();
    let (chats, tips) = room_traffic(pool, k, s, 2, k.seconds).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_s = tree_cpu_seconds(s.pid, ticks) - cpu0;
    let gen_cpu_s = generator_cpu(s.pid, ticks) - gen0;
    let pg_cpu_s = pg_cpu_since(&pg0, &pg_backends_cpu(&s.database, ticks).await);
    let n = k.viewers as u64;
    // A chat message reaches every viewer but its writer's socket; a tip's line every viewer.
    let expected = chats * (n - 1) + tips * n;
    let (m, acked_in) = settle(pool, |_| expected).await;
    let w = Window {
        m,
        expected,
        secs,
        cpu_s,
        pg_cpu_s,
        gen_cpu_s,
        acked_in: acked_in + secs,
    };
    (w, warmup_tips + tips)
}

/// The same room on a peer (socket.io 4.8 on Node.js, or socketioxide alone), after Onda has
/// stopped, so each server has the machine to itself: the same viewers with the same tokens,
/// all in one room (`join-stream`), and the room's whole rate as `stream-message` (chat and tips
/// alike: the peers have no ledger), each stored in PostgreSQL, then emitted to the room but
/// its writer's socket and acknowledged (what a platform's own Node server does today).
async fn peer_room(
    kind: PeerKind,
    k: &Knobs,
    tokens: &[String],
    (issuer, secret): (&str, &str),
) -> Window {
    let peer = Peer::start(kind, issuer, secret).await;
    let (pid, database) = (peer.pid(), peer.database());
    let pool = Pool::connect(&peer.url, tokens, k.ramp).await;
    let (connected, ..) = pool.wait_answered(Duration::from_secs(90)).await;
    for i in 0..k.viewers {
        pool.emit(
            i,
            Emit {
                event: "join-stream",
                payload: json!({ "streamId": "bench-show" }),
                stamp: None,
                stamp_field: "content",
            },
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.stats.joined.load(Ordering::SeqCst) < k.viewers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{}: {connected} connected, {} in the room",
        kind.name(),
        pool.stats.joined.load(Ordering::SeqCst)
    );
    let per_sec = k.chat_rate + k.tip_rate;
    let say = |tag: u32| {
        move |n: usize| {
            let e = Emit {
                event: "stream-message",
                payload: json!({ "streamId": "bench-show" }),
                stamp: Some(tag),
                stamp_field: "content",
            };
            (k.sender(n), e)
        }
    };
    let ticks = clock_ticks();
    pool.stats.measure(2);
    paced(&pool, k.warmup, per_sec, say(1)).await;
    let pg0 = pg_backends_cpu(&database, ticks).await;
    let cpu0 = tree_cpu_seconds(pid, ticks);
    let gen0 = generator_cpu(pid, ticks);
    let t0 = Instant::now();
    paced(&pool, k.seconds, per_sec, say(2)).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_s = tree_cpu_seconds(pid, ticks) - cpu0;
    let gen_cpu_s = generator_cpu(pid, ticks) - gen0;
    let pg_cpu_s = pg_cpu_since(&pg0, &pg_backends_cpu(&database, ticks).await);
    let expected = k.seconds * per_sec as u64 * (k.viewers as u64 - 1);
    let (m, acked_in) = settle(&pool, |_| expected).await;
    pool.close(Duration::from_secs(30)).await;
    Window {
        m,
        expected,
        secs,
        cpu_s,
        pg_cpu_s,
        gen_cpu_s,
        acked_in: acked_in + secs,
    }
}

/// The amount of the ledger phase's tip `n` (numbered from 0 in the warm-up and again in the
/// window).
fn ledger_amount(n: usize) -> i64 {
    1 + (n % 9) as i64
}

/// Every ledger-phase tip: (its tipper, its amount), warm-up and window.
fn ledger_tips(k: &Knobs) -> impl Iterator<Item = (usize, i64)> + '_ {
    [k.warmup, k.ledger_seconds]
        .into_iter()
        .flat_map(move |secs| {
            (0..secs as usize * k.ledger_rate).map(move |n| (n % k.ledger_rate, ledger_amount(n)))
        })
}

async fn ledger(pool: &Pool, k: &Knobs, s: &Setup) -> Window {
    let ticks = clock_ticks();
    pool.stats.measure(4);
    let emit = |tag: u32| {
        move |n: usize| {
            let client = n % k.ledger_rate;
            (client, tip(s, tag, n, (ledger_amount(n), false)))
        }
    };
    paced(pool, k.warmup, k.ledger_rate, emit(3)).await;
    let pg0 = pg_backends_cpu(&s.database, ticks).await;
    let cpu0 = tree_cpu_seconds(s.pid, ticks);
    let gen0 = generator_cpu(s.pid, ticks);
    let t0 = Instant::now();
    paced(pool, k.ledger_seconds, k.ledger_rate, emit(4)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (m, acked_in) = settle(pool, |_| 0).await;
    Window {
        m,
        expected: 0,
        secs,
        cpu_s: tree_cpu_seconds(s.pid, ticks) - cpu0,
        pg_cpu_s: pg_cpu_since(&pg0, &pg_backends_cpu(&s.database, ticks).await),
        gen_cpu_s: generator_cpu(s.pid, ticks) - gen0,
        acked_in: acked_in + secs,
    }
}

/// Checks the ledger against what was sent (every tip acknowledged): the creator's earnings,
/// each tipper's wallet, and the ledger's own check. Prints what is off.
async fn totals_exact(http: &reqwest::Client, s: &Setup, k: &Knobs, room_tips: u64) -> bool {
    let get = |path: String| async move {
        let r = http
            .get(format!("{}{path}", s.api))
            .bearer_auth(&s.key)
            .send()
            .await
            .expect("request");
        r.json::<Value>().await.expect("json")
    };
    let fee = |amount: i64| amount * s.fee_bps / 10_000;
    let room_net = (0..room_tips)
        .map(|_| ROOM_TIP - fee(ROOM_TIP))
        .sum::<i64>();
    let ledger_net = ledger_tips(k).map(|(_, a)| a - fee(a)).sum::<i64>();
    let mut spent = vec![0i64; k.ledger_rate];
    for (tipper, a) in ledger_tips(k) {
        spent[tipper] += a;
    }
    let mut ok = true;
    let star = get("/v1/users/star/wallet".into()).await;
    if star["earnings"].as_i64() != Some(room_net + ledger_net) {
        println!(
            "FAIL: the creator's earnings are {}, the tips acknowledged make {}",
            star["earnings"],
            room_net + ledger_net
        );
        ok = false;
    }
    let mut off = 0;
    for (i, spent) in spent.iter().enumerate() {
        let w = get(format!("/v1/users/{}/wallet", s.ids[i])).await;
        if w["balance"].as_i64() != Some(CREDIT - spent) {
            off += 1;
        }
    }
    if off > 0 {
        println!("FAIL: {off} tippers' wallets are not their credit minus their tips");
        ok = false;
    }
    let check = get("/v1/ledger/check".into()).await;
    if check["ok"] != json!(true) {
        println!("FAIL: the ledger check: {check}");
        ok = false;
    }
    ok
}

fn line(name: &str, w: &Window, n: u64) {
    let l = &w.m.latencies_ms;
    println!(
        "| {name} | {} | {} | {} of {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} |",
        w.m.sent,
        w.m.acked,
        w.m.delivered,
        w.expected,
        percentile(l, 0.5),
        percentile(l, 0.99),
        w.cpu_s,
        w.pg_cpu_s,
        w.gen_cpu_s,
        n as f64 / w.acked_in.max(0.001),
    );
}

async fn bench() -> bool {
    let k = Knobs::from_env();
    if std::env::var_os("ONDA_BIN").is_none() {
        eprintln!(
            "ONDA_BIN is not set: run scripts/bench-live-chat.sh (it builds the release binary)"
        );
        std::process::exit(2);
    }
    println!(
        "live chat benchmark: {k:?}, open file limit {}",
        raise_nofile()
    );
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
    let database = fx.db.url.rsplit('/').next().unwrap_or_default().to_string();
    let s = setup(&fx.cp, database, &k).await;
    let rss0 = tree_rss_kib(s.pid);
    let pool = Pool::connect(&s.api, &s.tokens, k.ramp).await;
    let (connected, refused, failed, pending) = pool.wait_answered(Duration::from_secs(90)).await;
    println!(
        "connections: {connected} connected, {refused} refused, {failed} failed, {pending} unanswered"
    );
    for i in 0..k.viewers {
        pool.emit(
            i,
            Emit {
                event: "join-stream",
                payload: json!({ "streamId": s.stream }),
                stamp: None,
                stamp_field: "content",
            },
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.stats.joined.load(Ordering::SeqCst) < k.viewers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined = pool.stats.joined.load(Ordering::SeqCst);
    println!(
        "joined the stream's room: {joined}; server RSS {} -> {} MiB",
        rss0 / 1024,
        tree_rss_kib(s.pid) / 1024
    );
    let mut ok = connected == k.viewers && joined == k.viewers;
    let (r, room_tips) = if k.room {
        let (r, tips) = room(&pool, &k, &s).await;
        (Some(r), tips)
    } else {
        (None, 0)
    };
    let l = ledger(&pool, &k, &s).await;
    println!(
        "\n| phase | sent | acked | delivered | p50 ms | p99 ms | server CPU-s | PostgreSQL CPU-s | generator CPU-s | acked/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    if let Some(r) = &r {
        line("room", r, r.m.acked);
    }
    line("ledger", &l, l.m.acked);
    println!(
        "ledger: {} of {} tips acknowledged, {} refused, the last ack {:.1} s after the burst began",
        l.m.acked, l.m.sent, l.m.ack_errors, l.acked_in
    );
    if let Some(r) = &r {
        println!(
            "room: {:.1} s window, {} deliveries a server CPU-second",
            r.secs,
            (r.m.delivered as f64 / r.cpu_s.max(0.001)).round()
        );
        let p99 = percentile(&r.m.latencies_ms, 0.99);
        println!(
            "goal p99 < 150 ms: {}",
            if p99 < 150.0 { "met" } else { "NOT met" }
        );
    }
    // How the tips' writer grouped the tips of both phases (its batches, from /metrics).
    let (tips, transactions) =
        histogram_totals(&fx.cp.http, &s.api, "onda_ledger_tip_batch_size").await;
    if transactions > 0.0 {
        println!(
            "onda wrote {tips} tips in {transactions} transactions ({:.1} a transaction)",
            tips / transactions
        );
    }
    let (answered, replayed) = retry_ledger(&fx.cp.http, &s, &k).await;
    let all = ((k.warmup + k.ledger_seconds) as usize) * k.ledger_rate;
    println!(
        "ledger: every tip sent again over REST with its key: {answered} of {all} answered 201, \
         {replayed} of them replays of a tip committed during the burst"
    );
    ok &= r.as_ref().is_none_or(Window::ok) && answered == all;
    ok &= totals_exact(&fx.cp.http, &s, &k, room_tips).await;
    print_first_error(&pool);
    pool.close(Duration::from_secs(30)).await;
    println!(
        "totals exact and nothing lost or duplicated: {}",
        if ok { "yes" } else { "NO" }
    );
    // The peers have a room only: they run when Onda's room did.
    if let Some(r) = r {
        let signer = token_signer(&fx.db.url, &s.tokens, &s.kid).await;
        drop(fx);
        peers_rooms(&k, &s.tokens, signer, r).await;
    }
    ok
}

/// The room on each peer asked for (`BENCH_ENGINE`, `BENCH_NODE`), one after the other with
/// Onda stopped, and the table of all against Onda's window `onda`.
async fn peers_rooms(
    k: &Knobs,
    tokens: &[String],
    (issuer, secret): (String, String),
    onda: Window,
) {
    let mut windows = vec![("onda", onda)];
    for (kind, knob_name) in [
        (PeerKind::Socketioxide, "BENCH_ENGINE"),
        (PeerKind::Node, "BENCH_NODE"),
    ] {
        if knob(knob_name, 1) > 0 {
            let w = peer_room(kind, k, tokens, (&issuer, &secret)).await;
            windows.push((kind.name(), w));
        }
    }
    compare(&windows);
}

/// The first thing that went wrong in the load generator, if anything did.
fn print_first_error(pool: &Pool) {
    let first = pool
        .stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(e) = first {
        println!("first error: {e}");
    }
}

/// The room on every server, one after the other in this run, and the ratios to Onda's.
fn compare(windows: &[(&str, Window)]) {
    let Some((_, onda)) = windows.first() else {
        return;
    };
    println!(
        "\n| room, {} s | delivered / expected | deliveries/s | p50 ms | p99 ms | server CPU-s | deliveries per server CPU-s | PostgreSQL CPU-s | generator CPU-s |",
        onda.secs.round()
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let per_cpu = |w: &Window| w.m.delivered as f64 / w.cpu_s.max(0.001);
    for (name, w) in windows {
        let l = &w.m.latencies_ms;
        println!(
            "| {name} | {} / {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} | {:.2} |",
            w.m.delivered,
            w.expected,
            w.m.delivered as f64 / w.secs.max(0.001),
            percentile(l, 0.5),
            percentile(l, 0.99),
            w.cpu_s,
            per_cpu(w),
            w.pg_cpu_s,
            w.gen_cpu_s,
        );
    }
    for (name, w) in &windows[1..] {
        println!(
            "onda / {name}: {:.2}x the deliveries per server CPU-second; p99 {:.2}x; {name} \
             delivered every message once: {}",
            per_cpu(onda) / per_cpu(w).max(0.001),
            percentile(&onda.m.latencies_ms, 0.99) / percentile(&w.m.latencies_ms, 0.99).max(0.001),
            if w.ok() { "yes" } else { "NO" }
        );
    }
}

fn main() {
    onda_tests::bench::main_of(bench());
}

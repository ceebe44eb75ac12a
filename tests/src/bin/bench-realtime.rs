//! Benchmark (not a test): Onda's realtime gateway against a Node.js server with `socket.io` 4.8
//! (tests/bench/realtime-node) doing the same work, one after the other in the same run, on the
//! same machine, driven by the same load generator (`onda_tests::sioload`); and between them
//! socketioxide alone (`sio-peer`: Node's work on the engine under Onda's gateway, configured
//! as the gateway configures it), which tells what the engine costs before Onda adds anything.
//!
//! Onda: `onda control-plane` (release build, `ONDA_BIN`) on a fresh PostgreSQL database, a
//! tenant on the Premium plan (it has `messaging`), end users made with `PUT /v1/users/{id}` and
//! their tokens minted with `POST /v1/users/{id}/tokens`. The peers: the same tokens, checked
//! with the secret of the tenant's managed signing key (read from Onda's database, as a tenant's
//! server holds its own key), their messages in a PostgreSQL database of their own.
//!
//! Scenarios, each against every server:
//! - **connections**: `BENCH_CLIENTS` clients (10,000) connect at `BENCH_RAMP` a second (500)
//!   and stay idle `BENCH_IDLE_SECONDS` (15): the server's RSS with none and with all of them,
//!   memory per connection, CPU while idle.
//! - **pairs**: with all clients still connected, `BENCH_PAIRS` pairs (2,000) exchange one
//!   `send-message` a second each (the two users of a pair take turns) for `BENCH_SECONDS` (30)
//!   after a 3 s warm-up: deliveries a second, delivery latency p50/p99 (send time carried in
//!   the content), the server's CPU-seconds and deliveries per CPU-second; also the CPU of the
//!   server's PostgreSQL backends.
//! - **room** (the peers only, `BENCH_ROOM` members, 5,000, `BENCH_ROOM_RATE` messages a
//!   second, 10): Onda's stream rooms take a real stream and entitled viewers, and are measured
//!   by `bench-live-chat`; `BENCH_ROOM=0` leaves it out.
//!
//! The run fails (exit 1) when a server misbehaves: a connection refused, failed or dropped, a
//! message refused or never acknowledged, a delivery lost. Run it with
//! `scripts/bench-realtime.sh`.
#![forbid(unsafe_code)]

use onda_tests::bench::{clock_ticks, tree_cpu_seconds, tree_rss_kib};
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::realtime_bench::{
    self, Peer, PeerKind, database_name, knob, pg_backends_cpu, pg_cpu_since, raise_nofile,
};
use onda_tests::sioload::{Emit, Measured, Pool, percentile};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-realtime-0123456";

/// The scale of the run, from `BENCH_*` environment variables (the numbers by default).
#[derive(Debug, Clone)]
struct Knobs {
    clients: usize,
    ramp: usize,
    idle: u64,
    pairs: usize,
    seconds: u64,
    warmup: u64,
    room: usize,
    room_rate: usize,
}

impl Knobs {
    fn from_env() -> Knobs {
        let k = Knobs {
            clients: knob("BENCH_CLIENTS", 10_000),
            ramp: knob("BENCH_RAMP", 500).max(1),
            idle: knob("BENCH_IDLE_SECONDS", 15) as u64,
            pairs: knob("BENCH_PAIRS", 2_000),
            seconds: knob("BENCH_SECONDS", 30).max(1) as u64,
            warmup: knob("BENCH_WARMUP_SECONDS", 3) as u64,
            room: knob("BENCH_ROOM", 5_000),
            room_rate: knob("BENCH_ROOM_RATE", 10).max(1),
        };
        if 2 * k.pairs > k.clients || k.room >= k.clients.max(1) {
            eprintln!(
                "BENCH_PAIRS ({}) needs 2 clients a pair and BENCH_ROOM ({}) one sender besides \
                 the room, within BENCH_CLIENTS ({})",
                k.pairs, k.room, k.clients
            );
            std::process::exit(2);
        }
        k
    }
}

/// The end users both servers serve: ids, tokens, and what checks the tokens.
struct Users {
    ids: Vec<String>,
    tokens: Vec<String>,
    /// The tenant: the tokens' `iss`.
    issuer: String,
    /// The tenant's managed signing key, which signed every token.
    secret: String,
}

/// A server under test: its base URL, process and database.
struct Server {
    name: &'static str,
    url: String,
    pid: u32,
    database: String,
}

#[derive(Debug, Default)]
struct Connections {
    connected: usize,
    refused: usize,
    failed: usize,
    pending: usize,
    dropped: usize,
    secs: f64,
    rss0_kib: u64,
    rss_kib: u64,
    idle_cpu_pct: f64,
}

#[derive(Debug, Default)]
struct Flow {
    m: Measured,
    /// Deliveries every acknowledged message should make.
    fanout: u64,
    window: f64,
    cpu_s: f64,
    pg_cpu_s: f64,
    rss_kib: u64,
    notifications: u64,
}

impl Flow {
    fn expected(&self) -> u64 {
        self.m.acked * self.fanout
    }

    fn per_second(&self) -> f64 {
        self.m.delivered as f64 / self.window
    }

    fn per_cpu(&self) -> f64 {
        self.m.delivered as f64 / self.cpu_s
    }

    fn per_cpu_with_pg(&self) -> f64 {
        self.m.delivered as f64 / (self.cpu_s + self.pg_cpu_s)
    }

    fn ok(&self) -> bool {
        self.m.ack_errors == 0
            && self.m.acked == self.m.sent
            && self.m.delivered == self.expected()
            && self.m.sent > 0
    }
}

#[derive(Debug, Default)]
struct Report {
    connections: Connections,
    pairs: Option<Flow>,
    room: Option<Flow>,
    first_error: Option<String>,
}

impl Report {
    fn ok(&self) -> bool {
        let c = &self.connections;
        c.refused == 0
            && c.failed == 0
            && c.pending == 0
            && c.dropped == 0
            && self.pairs.as_ref().is_none_or(Flow::ok)
            && self.room.as_ref().is_none_or(Flow::ok)
    }
}

/// Makes `n` users of a new Premium tenant and mints a token for each, 32 requests at a time.
async fn onda_users(fx: &ClusterFixture, n: usize) -> Users {
    let cp = &fx.cp;
    // Premium allows 1000 connections at once; the run holds `n`.
    let (s, plan) = cp
        .call(
            reqwest::Method::PATCH,
            "/v1/plans/plan_premium",
            Some(json!({ "limits": { "max_realtime_connections": n + 100 } })),
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    let key = cp.tenant_key("Bench Creators").await;
    let ids: Vec<String> = (0..n).map(|i| format!("u{i:05}")).collect();
    let (tokens, kid) = realtime_bench::mint_users(&cp.http, &cp.api, &key, &ids).await;
    let (issuer, secret) = realtime_bench::token_signer(&fx.db.url, &tokens, &kid).await;
    Users {
        ids,
        tokens,
        issuer,
        secret,
    }
}

/// A peer as a server under test.
fn peer_server(peer: &Peer) -> Server {
    Server {
        name: peer.kind.name(),
        url: peer.url.clone(),
        pid: peer.pid(),
        database: peer.database(),
    }
}

/// Sends `per_second` stamped messages a second for `secs`, spread evenly, each made by
/// `message(second, i)`: (client, event, payload).
async fn paced(
    pool: &Pool,
    tag: u32,
    secs: u64,
    per_second: usize,
    message: impl Fn(u64, usize) -> (usize, &'static str, Value),
) {
    let start = Instant::now();
    for sec in 0..secs {
        for i in 0..per_second {
            let at = start
                + Duration::from_secs(sec)
                + Duration::from_micros(i as u64 * 1_000_000 / per_second as u64);
            tokio::time::sleep_until(at.into()).await;
            let (client, event, payload) = message(sec, i);
            pool.emit(
                client,
                Emit {
                    event,
                    payload,
                    stamp: Some(tag),
                    stamp_field: "content",
                },
            );
        }
    }
}

/// Runs a warm-up then a measured window of `message`s, and waits (at most 15 s) for their
/// acks and `fanout` deliveries each.
#[allow(clippy::too_many_arguments)]
async fn flow(
    server: &Server,
    pool: &Pool,
    k: &Knobs,
    tag: u32,
    per_second: usize,
    fanout: u64,
    message: impl Fn(u64, usize) -> (usize, &'static str, Value) + Copy,
) -> Flow {
    let ticks = clock_ticks();
    let stats = &pool.stats;
    // The warm-up's tag is never measured: its stragglers do not count in the window.
    stats.measure(tag);
    paced(pool, tag - 1, k.warmup, per_second, message).await;
    let notifications0 = stats.other("notification");
    let pg0 = pg_backends_cpu(&server.database, ticks).await;
    let cpu0 = tree_cpu_seconds(server.pid, ticks);
    let t0 = Instant::now();
    paced(pool, tag, k.seconds, per_second, message).await;
    let window = t0.elapsed().as_secs_f64();
    let cpu_s = tree_cpu_seconds(server.pid, ticks) - cpu0;
    let pg_cpu_s = pg_cpu_since(&pg0, &pg_backends_cpu(&server.database, ticks).await);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut m = stats.snapshot();
    while (m.acked + m.ack_errors < m.sent || m.delivered < m.acked * fanout)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = stats.snapshot();
    }
    Flow {
        m,
        fanout,
        window,
        cpu_s,
        pg_cpu_s,
        rss_kib: tree_rss_kib(server.pid),
        notifications: stats.other("notification") - notifications0,
    }
}

/// All three scenarios against one server (the room one only with `room`).
async fn run(server: &Server, users: &Users, k: &Knobs, room: bool) -> Report {
    let ticks = clock_ticks();
    println!("\n== {} at {}", server.name, server.url);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0_kib = tree_rss_kib(server.pid);
    let t0 = Instant::now();
    let pool = Pool::connect(&server.url, &users.tokens[..k.clients], k.ramp).await;
    let wait = Duration::from_secs(60);
    let (connected, refused, failed, pending) = pool.wait_answered(wait).await;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "connections: {connected} connected, {refused} refused, {failed} failed, {pending} \
         unanswered, in {secs:.1} s"
    );
    let cpu0 = tree_cpu_seconds(server.pid, ticks);
    let idle0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(k.idle)).await;
    let idle_cpu_pct =
        (tree_cpu_seconds(server.pid, ticks) - cpu0) / idle0.elapsed().as_secs_f64() * 100.0;
    let mut report = Report {
        connections: Connections {
            connected,
            refused,
            failed,
            pending,
            secs,
            rss0_kib,
            rss_kib: tree_rss_kib(server.pid),
            idle_cpu_pct,
            ..Connections::default()
        },
        ..Report::default()
    };
    let ids = &users.ids;
    if connected == k.clients && k.pairs > 0 {
        // Pair p is clients 2p and 2p+1; they take turns, so each pair sends one a second.
        let pairs = flow(server, &pool, k, 2, k.pairs, 1, |sec, p| {
            let from = 2 * p + (sec as usize + p) % 2;
            let to = from ^ 1;
            (from, "send-message", json!({ "receiverId": ids[to] }))
        })
        .await;
        println!(
            "pairs: {} sent, {} acknowledged, {} delivered of {}; {} notification events besides",
            pairs.m.sent,
            pairs.m.acked,
            pairs.m.delivered,
            pairs.expected(),
            pairs.notifications
        );
        report.pairs = Some(pairs);
    }
    if room && connected == k.clients && k.room > 0 {
        for i in 0..k.room {
            pool.emit(
                i,
                Emit {
                    event: "join-stream",
                    payload: json!({"streamId": "bench"}),
                    stamp: None,
                    stamp_field: "content",
                },
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.stats.joined.load(Ordering::SeqCst) < k.room && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sender = k.room;
        let flow = flow(server, &pool, k, 4, k.room_rate, k.room as u64, |_, _| {
            (sender, "stream-message", json!({"streamId": "bench"}))
        })
        .await;
        println!(
            "room: {} sent, {} acknowledged, {} delivered of {}",
            flow.m.sent,
            flow.m.acked,
            flow.m.delivered,
            flow.expected()
        );
        report.room = Some(flow);
    }
    report.connections.dropped = pool.stats.dropped.load(Ordering::SeqCst);
    report.first_error = pool
        .stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    pool.close(Duration::from_secs(30)).await;
    report
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn kib_per_connection(c: &Connections) -> f64 {
    (c.rss_kib as f64 - c.rss0_kib as f64) / c.connected.max(1) as f64
}

fn print_tables(k: &Knobs, reports: &[(&str, &Report)]) {
    println!(
        "\n(a) {} clients connected at {}/s, then idle {} s\n",
        k.clients, k.ramp, k.idle
    );
    println!(
        "| server | connected | refused / failed / dropped | connect time s | RSS idle MiB | \
         RSS connected MiB | KiB per connection | CPU % while idle |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, r) in reports {
        let c = &r.connections;
        println!(
            "| {name} | {}/{} | {} / {} / {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            c.connected,
            k.clients,
            c.refused,
            c.failed + c.pending,
            c.dropped,
            c.secs,
            mib(c.rss0_kib),
            mib(c.rss_kib),
            kib_per_connection(c),
            c.idle_cpu_pct
        );
    }
    let flows = |title: String, pick: fn(&Report) -> Option<&Flow>| {
        println!("\n{title}\n");
        println!(
            "| server | sent / acked | delivered / expected | deliveries/s | p50 ms | p99 ms | \
             max ms | server CPU-s | deliveries per CPU-s | PostgreSQL CPU-s | deliveries per \
             CPU-s with PostgreSQL | RSS MiB |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (name, r) in reports {
            let Some(f) = pick(r) else {
                println!("| {name} | not measured | | | | | | | | | | |");
                continue;
            };
            let l = &f.m.latencies_ms;
            println!(
                "| {name} | {} / {} | {} / {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | \
                 {:.1} | {:.0} | {:.1} |",
                f.m.sent,
                f.m.acked,
                f.m.delivered,
                f.expected(),
                f.per_second(),
                percentile(l, 0.5),
                percentile(l, 0.99),
                l.last().copied().unwrap_or(f64::NAN),
                f.cpu_s,
                f.per_cpu(),
                f.pg_cpu_s,
                f.per_cpu_with_pg(),
                mib(f.rss_kib)
            );
        }
    };
    flows(
        format!(
            "(b) {} pairs, one message a second each, {} s (all {} clients connected)",
            k.pairs, k.seconds, k.clients
        ),
        |r| r.pairs.as_ref(),
    );
    if k.room > 0 {
        flows(
            format!(
                "(c) a room of {}, {} messages a second from one sender, {} s",
                k.room, k.room_rate, k.seconds
            ),
            |r| r.room.as_ref(),
        );
    }
}

/// Prints whether the goals are met (they are not a failure of the run).
fn print_goals(k: &Knobs, onda: &Report, node: &Report) {
    println!("\nGoals:");
    let (o, n) = (&onda.connections, &node.connections);
    let p99 = onda
        .pairs
        .as_ref()
        .map_or(f64::NAN, |f| percentile(&f.m.latencies_ms, 0.99));
    let met = |yes: bool| if yes { "met" } else { "NOT met" };
    println!(
        "- {} connections with p99 < 100 ms: {} of {} connected, pairs' p99 {p99:.1} ms: {}",
        k.clients,
        o.connected,
        k.clients,
        met(o.connected == k.clients && p99 < 100.0)
    );
    if let (Some(of), Some(nf)) = (&onda.pairs, &node.pairs) {
        let r = of.per_cpu() / nf.per_cpu();
        let rp = of.per_cpu_with_pg() / nf.per_cpu_with_pg();
        println!(
            "- >= 3x Node's deliveries per CPU-second: {r:.2}x ({rp:.2}x counting each side's \
             PostgreSQL backends): {}",
            met(r >= 3.0)
        );
    }
    let r = kib_per_connection(o) / kib_per_connection(n);
    println!(
        "- <= 0.5x Node's memory per connection: {:.1} / {:.1} KiB = {r:.2}x: {}",
        kib_per_connection(o),
        kib_per_connection(n),
        met(r <= 0.5)
    );
}

/// What socketioxide alone (the engine under Onda's gateway, doing only Node's work) gets
/// against Node: the most Onda could get on this engine, whatever it did on top.
fn print_floor(engine: &Report, node: &Report) {
    println!("\nThe engine's floor (socketioxide alone against Node):");
    if let (Some(ef), Some(nf)) = (&engine.pairs, &node.pairs) {
        println!(
            "- deliveries per CPU-second: {:.2}x Node's ({:.0} against {:.0})",
            ef.per_cpu() / nf.per_cpu(),
            ef.per_cpu(),
            nf.per_cpu()
        );
    }
    let (e, n) = (
        kib_per_connection(&engine.connections),
        kib_per_connection(&node.connections),
    );
    println!(
        "- memory per connection: {e:.1} / {n:.1} KiB = {:.2}x Node's",
        e / n
    );
}

/// Raises the soft open-file limit to the hard one: every client is a descriptor here, and
/// every connection one in the server (which inherits the limit).
async fn bench() -> bool {
    let k = Knobs::from_env();
    if std::env::var_os("ONDA_BIN").is_none() {
        eprintln!(
            "ONDA_BIN is not set: run scripts/bench-realtime.sh (it builds the release binary)"
        );
        std::process::exit(2);
    }
    let nofile = raise_nofile();
    println!("realtime benchmark: {k:?}, open file limit {nofile}");
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
    let t = Instant::now();
    let users = onda_users(&fx, k.clients).await;
    println!(
        "{} users and tokens made through the API in {:.1} s",
        k.clients,
        t.elapsed().as_secs_f64()
    );
    let onda = {
        let server = Server {
            name: "onda",
            url: fx.cp.api.clone(),
            pid: fx.cp.proc.pid(),
            database: database_name(&fx.db.url),
        };
        let report = run(&server, &users, &k, false).await;
        // How the gateway's writer grouped the messages (its batches, from /metrics).
        let (stored, transactions) = realtime_bench::histogram_totals(
            &fx.cp.http,
            &fx.cp.api,
            "onda_realtime_message_batch_size",
        )
        .await;
        if transactions > 0.0 {
            println!(
                "onda stored {stored} messages in {transactions} transactions ({:.1} a transaction)",
                stored / transactions
            );
        }
        for line in fx
            .cp
            .proc
            .logs()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .take(8)
        {
            println!("onda: {line}");
        }
        report
    };
    // Each server stops before the next starts: each has the machine to itself.
    drop(fx);
    let mut peers = Vec::new();
    for kind in [PeerKind::Socketioxide, PeerKind::Node] {
        let peer = Peer::start(kind, &users.issuer, &users.secret).await;
        peers.push((
            kind.name(),
            run(&peer_server(&peer), &users, &k, true).await,
        ));
    }
    let [(_, engine), (_, node)] = &peers[..] else {
        unreachable!("two peers")
    };
    let reports: Vec<(&str, &Report)> = std::iter::once(("onda", &onda))
        .chain(peers.iter().map(|(name, r)| (*name, r)))
        .collect();
    print_tables(&k, &reports);
    print_goals(&k, &onda, node);
    print_floor(engine, node);
    let mut ok = true;
    for (name, r) in reports {
        if !r.ok() {
            ok = false;
            println!(
                "FAIL: {name} misbehaved (refused, failed or dropped connections, refused or \
                 unacknowledged messages, or lost deliveries); first error: {}",
                r.first_error.as_deref().unwrap_or("none recorded")
            );
        }
    }
    ok
}

fn main() {
    onda_tests::bench::main_of(bench());
}

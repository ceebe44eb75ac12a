//! Benchmark (not a test): the panel API's latency while thousands of public now-playing feeds
//! (`/api/nowplaying/{station}/events`, unauthenticated Server-Sent Events) are open and
//! now-playing changes.
//!
//! One `onda control-plane` (release build, SQLite, in-memory coordinator) and one `onda agent`
//! whose AutoDJ plays three 4-second tracks in a loop, so the station's now-playing changes every
//! 4 s. `GET /v1/stations` (a tenant key, a new connection per request, like a panel user) is
//! timed `--samples` times (default 400, one every 25 ms) with no feed open, then again with
//! `--subscribers` feeds open (default 20,000), spread over `--sources` loopback addresses
//! (127.0.0.1 … 127.0.0.N, default 10) with `nowplaying.max_subscribers_per_ip` set to each
//! address's share. The feeds are held by worker processes (this binary with `--worker`), one per
//! address, so no process needs more than its share of descriptors. Reported: p50/p99 idle and
//! under the feeds and their ratios, feeds admitted and refused, events delivered and feeds
//! that saw a track change during the window, snapshot builds (database reads) in the window,
//! and the control plane's CPU and RSS. The run passes when both ratios are at most 2.
//!
//! Run with `scripts/bench-nowplaying.sh` (raises `ulimit -n`, builds release binaries, sets
//! `ONDA_BIN`). Options: `--subscribers N` `--sources N` `--samples N`.
#![forbid(unsafe_code)]

use onda_tests::bench::{arg, clock_ticks, tree_cpu_seconds, tree_rss_kib};
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::wait_for;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

const ADMIN: &str = "bench-admin-token-nowplaying-0123";

fn num(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default)]
struct FeedCounts {
    opened: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
    events: AtomicU64,
    /// Feeds that received at least two events (the first answer, then a change).
    changed: AtomicUsize,
}

/// One feed from `source`: counts its events until the connection ends.
async fn feed(addr: SocketAddr, source: IpAddr, path: Arc<str>, counts: Arc<FeedCounts>) {
    let fail = |c: &FeedCounts| c.failed.fetch_add(1, Ordering::Relaxed);
    let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
        fail(&counts);
        return;
    };
    if sock.bind(SocketAddr::new(source, 0)).is_err() {
        fail(&counts);
        return;
    }
    let Ok(mut s) = sock.connect(addr).await else {
        fail(&counts);
        return;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        fail(&counts);
        return;
    }
    let mut buf = vec![0u8; 2048];
    let mut head = Vec::new();
    let mut seen = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    const NEEDLE: &[u8] = b"event: nowplaying";
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if head.len() < 12 {
            head.extend_from_slice(&buf[..n.min(12)]);
            if head.len() >= 12 {
                if &head[9..12] != b"200" {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                counts.opened.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Events may be cut between reads: keep the end of the last read.
        tail.extend_from_slice(&buf[..n]);
        let found = tail.windows(NEEDLE.len()).filter(|w| *w == NEEDLE).count() as u64;
        if found > 0 {
            counts.events.fetch_add(found, Ordering::Relaxed);
            if seen < 2 && seen + found >= 2 {
                counts.changed.fetch_add(1, Ordering::Relaxed);
            }
            seen += found;
            let last = tail
                .windows(NEEDLE.len())
                .rposition(|w| w == NEEDLE)
                .unwrap_or(0);
            tail.drain(..last + NEEDLE.len());
        }
        let keep = tail.len().saturating_sub(NEEDLE.len());
        tail.drain(..keep);
    }
}

/// `--worker ADDR PATH SOURCE COUNT`: holds COUNT feeds from SOURCE; prints `ready opened
/// refused failed` once every feed is answered, then `stats events changed opened` each second,
/// until its stdin closes.
async fn worker() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args[2].parse().expect("addr");
    let path: Arc<str> = Arc::from(args[3].as_str());
    let source: IpAddr = args[4].parse().expect("source");
    let count: usize = args[5].parse().expect("count");
    let counts = Arc::new(FeedCounts::default());
    for i in 0..count {
        tokio::spawn(feed(addr, source, path.clone(), counts.clone()));
        // Paced, so the listen backlog never overflows.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let answered = |c: &FeedCounts| {
        c.opened.load(Ordering::Relaxed)
            + c.refused.load(Ordering::Relaxed)
            + c.failed.load(Ordering::Relaxed)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered(&counts) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "ready {} {} {}",
        counts.opened.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed) + count - answered(&counts)
    );
    // The bench closes our stdin when it is done (or dies): then this worker exits.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "stats {} {} {}",
            counts.events.load(Ordering::Relaxed),
            counts.changed.load(Ordering::Relaxed),
            counts.opened.load(Ordering::Relaxed),
        );
    }
}

/// Times `samples` requests of `GET /v1/stations`, each on a new connection, in ms.
async fn latencies(api: &str, key: &str, samples: usize) -> Vec<f64> {
    let client = onda_shared::http::client_builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let ok = match client
            .get(format!("{api}/v1/stations"))
            .bearer_auth(key)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                eprintln!("GET /v1/stations answered {status}: {body:.400}");
                false
            }
            Err(e) => {
                eprintln!("GET /v1/stations failed: {e:?}");
                false
            }
        };
        out.push(if ok {
            t.elapsed().as_secs_f64() * 1000.0
        } else {
            30_000.0
        });
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

async fn metric(api: &str, name: &str) -> f64 {
    let Ok(r) = onda_shared::http::get(format!("{api}/metrics")).await else {
        return f64::NAN;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Workers {
    children: Vec<tokio::process::Child>,
    lines: tokio::sync::mpsc::UnboundedReceiver<(usize, String)>,
    last: Vec<(u64, usize, usize)>,
}

impl Workers {
    fn start(addr: &str, path: &str, sources: usize, per_source: &[usize]) -> Workers {
        let exe = std::env::current_exe().expect("this binary");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let mut children = Vec::new();
        for (i, count) in per_source.iter().enumerate().take(sources) {
            // `--worker-nice N` runs the feeds' readers at a lower priority: they stand for
            // clients on other machines, here sharing the server's two cores.
            let mut cmd = match arg("--worker-nice") {
                Some(n) => {
                    let mut c = tokio::process::Command::new("nice");
                    c.args(["-n", &n]).arg(&exe);
                    c
                }
                None => tokio::process::Command::new(&exe),
            };
            let mut child = cmd
                .args(["--worker", addr, path, &format!("127.0.0.{}", i + 1)])
                .arg(count.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("worker starts");
            let out = child.stdout.take().expect("stdout");
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if tx.send((i, l)).is_err() {
                        return;
                    }
                }
            });
            children.push(child);
        }
        let n = children.len();
        Workers {
            children,
            lines,
            last: vec![(0, 0, 0); n],
        }
    }

    /// Waits for every worker's `ready`: (opened, refused, failed).
    async fn ready(&mut self) -> (usize, usize, usize) {
        let mut got = 0;
        let mut total = (0, 0, 0);
        while got < self.children.len() {
            let Some((_, line)) = self.lines.recv().await else {
                break;
            };
            let v: Vec<usize> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if line.starts_with("ready ") && v.len() == 3 {
                got += 1;
                total = (total.0 + v[0], total.1 + v[1], total.2 + v[2]);
            }
        }
        total
    }

    /// The latest `stats` of all workers summed: (events, feeds that saw a change, open).
    fn stats(&mut self) -> (u64, usize, usize) {
        while let Ok((i, line)) = self.lines.try_recv() {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if line.starts_with("stats ") && v.len() == 3 {
                self.last[i] = (v[0], v[1] as usize, v[2] as usize);
            }
        }
        self.last
            .iter()
            .fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2))
    }
}

/// A control plane and an agent whose AutoDJ changes track every 4 s: the cluster, a tenant
/// key, the feed path and the media directory to keep.
async fn cluster(
    per_ip: usize,
    total: usize,
) -> (ClusterFixture, String, String, tempfile::TempDir) {
    let (per_ip, total) = (per_ip.to_string(), total.to_string());
    let fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: ADMIN,
        node_ttl_ms: 3000,
        nodes: &["edge-1"],
        env: &[
            ("ONDA_NOWPLAYING_MAX_SUBSCRIBERS_PER_IP", &per_ip),
            ("ONDA_NOWPLAYING_MAX_SUBSCRIBERS", &total),
        ],
        ..ClusterSpec::default()
    })
    .await;
    let cp = &fx.cp;
    let key = cp.tenant_key("Bench Radio").await;
    let (sid, slug) = cp
        .autodj_station(
            &key,
            "Bench FM",
            json!([{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]),
        )
        .await;
    let media = tempfile::tempdir().expect("dir");
    let tones = [
        ("t0.mp3", 440, 4, "Bench", "Track 0"),
        ("t1.mp3", 550, 4, "Bench", "Track 1"),
        ("t2.mp3", 660, 4, "Bench", "Track 2"),
    ];
    cp.upload_rotation(&key, &sid, media.path(), "Loop", &tones)
        .await;
    let public = format!("{}/api/nowplaying/{slug}", cp.api);
    wait_for("the AutoDJ playing", Duration::from_secs(90), || async {
        let np: Value = onda_shared::http::get(&public)
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        np["now_playing"]["song"]["text"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|_| ())
    })
    .await;
    let path = format!("/api/nowplaying/{slug}/events");
    (fx, key, path, media)
}

fn print_latency(label: &str, v: &[f64]) {
    println!(
        "{label:<28} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} requests)",
        percentile(v, 0.5),
        percentile(v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    );
}

/// Runs the benchmark; true when it met its goal. Returns (rather than exits) so the harness's
/// processes are killed when they drop.
async fn bench() -> bool {
    let subscribers = num("--subscribers", 20_000);
    let sources = num("--sources", 10).clamp(1, 250);
    let samples = num("--samples", 1000).max(10);
    if std::env::var_os("ONDA_BIN").is_none() {
        eprintln!(
            "ONDA_BIN is not set: run scripts/bench-nowplaying.sh (it builds the release binary)"
        );
        std::process::exit(2);
    }
    let per_source: Vec<usize> = (0..sources)
        .map(|i| subscribers / sources + usize::from(i < subscribers % sources))
        .collect();
    let per_ip = per_source.iter().copied().max().unwrap_or(1).max(1);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("Max open files ?")
        .split_whitespace()
        .nth(3)
        .unwrap_or("?")
        .to_string();
    println!(
        "now-playing feeds: {subscribers} subscribers from {sources} addresses ({per_ip} per \
         address), open file limit {nofile}"
    );
    let (fx, key, path, _media) = cluster(per_ip, subscribers).await;
    let cp = &fx.cp;
    let ticks = clock_ticks();
    let pid = cp.proc.pid();

    let idle = latencies(&cp.api, &key, samples).await;
    print_latency("idle", &idle);

    let addr = cp.api.trim_start_matches("http://").to_string();
    let t0 = Instant::now();
    let mut workers = Workers::start(&addr, &path, sources, &per_source);
    let (opened, refused, failed) = workers.ready().await;
    println!(
        "feeds: {opened} open, {refused} refused (503/429), {failed} failed, in {:.1} s; \
         control plane RSS {:.0} MiB",
        t0.elapsed().as_secs_f64(),
        tree_rss_kib(pid) as f64 / 1024.0
    );
    // One stats line per worker, so the counts below are as of the window's start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (events0, _, _) = workers.stats();
    let builds0 = metric(&cp.api, "onda_nowplaying_snapshot_builds_total").await;
    let cpu0 = tree_cpu_seconds(pid, ticks);
    let w0 = Instant::now();
    let loaded = latencies(&cp.api, &key, samples).await;
    let window = w0.elapsed().as_secs_f64();
    let cpu = (tree_cpu_seconds(pid, ticks) - cpu0) / window * 100.0;
    let builds = metric(&cp.api, "onda_nowplaying_snapshot_builds_total").await - builds0;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (events, changed, open) = workers.stats();
    let gauge = metric(&cp.api, "onda_nowplaying_subscribers").await;
    print_latency(&format!("under {opened} feeds"), &loaded);
    println!(
        "window {window:.1} s: {} events delivered ({:.2} per open feed), {changed} of {open} \
         feeds saw a track change since they opened, {builds} snapshot builds, {gauge} feeds by \
         the control plane's gauge; control plane CPU {cpu:.1} %, RSS {:.0} MiB",
        events - events0,
        (events - events0) as f64 / open.max(1) as f64,
        tree_rss_kib(pid) as f64 / 1024.0
    );
    drop(workers);
    for line in cp
        .proc
        .logs()
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .take(8)
    {
        println!("control plane: {line}");
    }

    let p50 = percentile(&loaded, 0.5) / percentile(&idle, 0.5);
    let p99 = percentile(&loaded, 0.99) / percentile(&idle, 0.99);
    let pass = p50 <= 2.0 && p99 <= 2.0;
    println!(
        "ratio under feeds / idle: p50 {p50:.2}x, p99 {p99:.2}x -> {}",
        if pass {
            "PASS (within 2x)"
        } else {
            "FAIL (over 2x)"
        }
    );
    pass
}

fn main() {
    let is_worker = std::env::args().nth(1).as_deref() == Some("--worker");
    let rt = if is_worker {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("runtime");
    if is_worker {
        rt.block_on(worker());
    } else {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pass = rt.block_on(bench());
        drop(rt);
        if !pass {
            std::process::exit(1);
        }
    }
}

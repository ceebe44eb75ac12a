//! Benchmark (not a test): one `onda edge` fanning one 128 kbps MP3 mount out to N Icecast
//! listeners, then to N HLS listeners of the same mount's audio HLS, in the same run (same
//! process, same source). Reports per protocol: listeners that kept up, the edge's CPU % and
//! RSS, and CPU per listener; then HLS/Icecast ratios.
//!
//! Run with `scripts/bench-hls-audio.sh` (builds release binaries). Options: `--listeners N`
//! (5000), `--window SECS` (24), `--ramp SECS` (10), `--onda PATH`.

use onda_tests::bench::{arg, clock_ticks, release_onda, rss_kib, tree_cpu_seconds};
use onda_tests::hls_load::{self, HlsPlan, KEPT_RATIO};
use onda_tests::load::{self, LoadPlan};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The edge under test; killed on drop.
struct Edge {
    child: Child,
    addr: String,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_edge(dir: &Path, onda: &Path) -> anyhow::Result<Edge> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[limits]\nmax_connections = 30000\n\
         max_connections_per_ip = 0\n\n[[mounts]]\npath = \"/live\"\nsource_password = \"hackme\"\n"
    );
    let cfg = dir.join("edge.toml");
    std::fs::write(&cfg, toml)?;
    let child = Command::new(onda)
        .args(["edge", "--config"])
        .arg(&cfg)
        .env("ONDA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Edge {
        child,
        addr: format!("127.0.0.1:{port}"),
    })
}

/// A minute of 440 Hz MP3 at 128 kbit/s for the source to loop.
fn make_track(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let track = dir.join("tone.mp3");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .args([
            "sine=frequency=440:sample_rate=44100:duration=60",
            "-ac",
            "2",
        ])
        .args(["-c:a", "libmp3lame", "-b:a", "128k"])
        .arg(&track)
        .status()?;
    anyhow::ensure!(made.success(), "ffmpeg could not make the test track");
    Ok(track)
}

/// Waits until the mount's HLS playlist lists a segment.
async fn wait_for_hls(addr: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) =
            onda_shared::http::get(format!("http://{addr}/hls-audio/live/index.m3u8")).await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// One protocol's measurement.
struct Row {
    protocol: &'static str,
    listeners: usize,
    kept_up: usize,
    failed: usize,
    min_median: (f64, f64),
    cpu_pct: f64,
    rss_mib: f64,
}

impl Row {
    fn cpu_per_listener(&self) -> f64 {
        self.cpu_pct / self.kept_up.max(1) as f64
    }
}

/// Runs `load` while measuring the edge's CPU over the whole of it (connect, settle, window).
async fn measured<F: std::future::Future<Output = T>, T>(pid: u32, load: F) -> (T, f64, f64) {
    let ticks = clock_ticks();
    let cpu0 = tree_cpu_seconds(pid, ticks);
    let t0 = Instant::now();
    let out = load.await;
    let cpu = (tree_cpu_seconds(pid, ticks) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    (out, cpu, rss_kib(pid) as f64 / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = arg("--listeners")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let window = Duration::from_secs(arg("--window").and_then(|v| v.parse().ok()).unwrap_or(24));
    let ramp = Duration::from_secs(arg("--ramp").and_then(|v| v.parse().ok()).unwrap_or(10));
    let onda = release_onda(arg("--onda"));
    let work = tempfile::tempdir()?;
    let track = make_track(work.path())?;
    let edge = start_edge(work.path(), &onda)?;
    let mut source = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(&track)
        .args(["-c", "copy", "-content_type", "audio/mpeg", "-f", "mp3"])
        .arg(format!("icecast://source:hackme@{}/live", edge.addr))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    anyhow::ensure!(wait_for_hls(&edge.addr).await, "the mount's HLS never came");
    let pid = edge.child.id();
    let (_, idle_cpu, idle_rss) = measured(pid, tokio::time::sleep(Duration::from_secs(5))).await;
    eprintln!("idle (source and segmenter only): cpu {idle_cpu:.1}% rss {idle_rss:.1} MiB");

    let plan = LoadPlan {
        addr: edge.addr.clone(),
        path: "/live".into(),
        listeners: n,
        ramp,
        settle: Duration::from_secs(3),
        window,
        bitrate_kbps: 128,
    };
    let (r, cpu, rss) = measured(pid, load::run(&plan)).await;
    eprintln!("icecast: {r:?} cpu {cpu:.1}% rss {rss:.1} MiB");
    let icecast = Row {
        protocol: "Icecast (ICY over HTTP)",
        listeners: n,
        kept_up: r.kept_up,
        failed: r.failed + r.ended_early,
        min_median: (r.min_rate_ratio, r.median_rate_ratio),
        cpu_pct: cpu,
        rss_mib: rss,
    };
    // Let the edge close the Icecast listeners' connections.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let plan = HlsPlan {
        addr: edge.addr.clone(),
        playlist: "/hls-audio/live/index.m3u8".into(),
        listeners: n,
        ramp,
        // A player's first fetch is three segments at once: settle past it.
        settle: Duration::from_secs(6),
        window,
        bitrate_kbps: 128,
    };
    let (r, cpu, rss) = measured(pid, hls_load::run(&plan)).await;
    eprintln!("hls: {r:?} cpu {cpu:.1}% rss {rss:.1} MiB");
    let hls = Row {
        protocol: "HLS (packed MP3, 4 s segments)",
        listeners: n,
        kept_up: r.kept_up,
        failed: r.failed,
        min_median: (r.min_rate_ratio, r.median_rate_ratio),
        cpu_pct: cpu,
        rss_mib: rss,
    };
    let _ = source.kill();
    let _ = source.wait();
    drop(edge);
    print_table(&[icecast, hls], idle_cpu, window);
    Ok(())
}

fn print_table(rows: &[Row; 2], idle_cpu: f64, window: Duration) {
    println!(
        "| protocol | listeners | kept up | failed | min / median rate | edge CPU % | CPU % per 1,000 | RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.2} / {:.2} | {:.1} | {:.2} | {:.1} |",
            r.protocol,
            r.listeners,
            r.kept_up,
            r.failed,
            r.min_median.0,
            r.min_median.1,
            r.cpu_pct,
            r.cpu_per_listener() * 1000.0,
            r.rss_mib
        );
    }
    let [ice, hls] = rows;
    println!();
    println!(
        "idle edge (source + segmenter): {idle_cpu:.1} % CPU; window {} s; HLS \"kept up\" = at least {:.0} % of the bitrate in the window (whole 4 s segments)",
        window.as_secs(),
        KEPT_RATIO * 100.0
    );
    println!(
        "CPU per listener HLS/Icecast = {:.2}; RSS HLS/Icecast = {:.2}",
        hls.cpu_per_listener() / ice.cpu_per_listener().max(1e-9),
        hls.rss_mib / ice.rss_mib.max(0.01)
    );
}

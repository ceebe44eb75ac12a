//! Benchmark (not a test): live video ingest and HLS, `onda edge` against nginx-rtmp (Debian
//! `libnginx-mod-rtmp`, `hls on`), one server at a time on this machine, with the same source:
//! N publishers each copying a pre-encoded 720p H.264 + AAC file (2.5 Mbit/s, 2 s GOP) in real
//! time (`ffmpeg -re -c copy`, so publishing costs little next to the servers). Reports per
//! server: CPU % and RSS over the window, in total and per stream, with the onda/nginx ratios,
//! and the latency from publish to segment availability: when a segment first appears in the
//! playlist minus when the publisher sent its last media, median and 95th percentile over the
//! segments of stream 0.
//!
//! Run with `scripts/bench-live.sh` (installs nginx and libnginx-mod-rtmp, builds release
//! binaries). Options: `--streams N` (default 10), `--window SECS` (default 30), `--part-ms`
//! (onda's LL-HLS part target, default 500), `--joins N` and `--glass-secs S` (player sessions
//! per kind of player in the glass-to-glass part, default 8 of 8 s, each joining at a random
//! moment), `--wrap "heaptrack -o FILE"` (onda under a heap profiler in the first part; its
//! figures are then not comparable).
//!
//! Then glass to glass (`onda_tests::glass`): one publisher drawing its wall clock into the
//! video, and players that start and fetch as hls.js does: plain HLS on both servers, LL-HLS on
//! onda.

use anyhow::Context as _;
use onda_tests::bench::{arg, clock_ticks, release_onda, tree_cpu_seconds, tree_rss_kib};
use onda_tests::glass::{self, Mode};
use onda_tests::process::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 20 s of 720p30 test pattern with a tone, H.264 2.5 Mbit/s with a keyframe every 2 s and AAC
/// 128 kbit/s, made once.
fn source(dir: &Path) -> anyhow::Result<PathBuf> {
    let file = dir.join("source-720p.mp4");
    if file.exists() {
        return Ok(file);
    }
    let ok = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "2500k",
            "-maxrate",
            "2500k",
            "-bufsize",
            "5000k",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
        ])
        .arg(&file)
        .status()?
        .success();
    anyhow::ensure!(ok, "ffmpeg could not make the source file");
    Ok(file)
}

fn publisher(source: &Path, url: &str) -> anyhow::Result<Running> {
    let child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(source)
        .args(["-c", "copy", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Running { child })
}

struct Server {
    name: &'static str,
    run: Running,
    rtmp: String,
    /// The playlist URL of stream `i`.
    playlist: Box<dyn Fn(usize) -> String>,
    /// Where the server counts its HTTP connections and requests (onda's `/metrics`).
    metrics: Option<String>,
}

fn start_onda(
    onda: &Path,
    wrap: Option<&str>,
    dir: &Path,
    streams: usize,
    part_ms: u64,
) -> anyhow::Result<Server> {
    let (http, rtmp) = (free_port(), free_port());
    let mut toml = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[rtmp]\nlisten = \"127.0.0.1:{rtmp}\"\n\
         [hls]\nsegment_ms = 2000\npart_ms = {part_ms}\nwindow = 6\n\
         [limits]\nmax_connections_per_ip = 0\n"
    );
    for i in 0..streams {
        toml.push_str(&format!(
            "[[live_streams]]\nname = \"s{i}\"\nkey = \"bench-key-{i:04}\"\n"
        ));
    }
    std::fs::write(dir.join("edge.toml"), toml)?;
    let child = onda_tests::bench::onda_command(onda, wrap)
        .args(["edge", "--config"])
        .arg(dir.join("edge.toml"))
        .env("ONDA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server {
        name: "onda",
        run: Running { child },
        rtmp: format!("rtmp://127.0.0.1:{rtmp}/live/bench-key-"),
        playlist: Box::new(move |i| format!("http://127.0.0.1:{http}/hls/s{i}/index.m3u8")),
        metrics: Some(format!("http://127.0.0.1:{http}/metrics")),
    })
}

fn start_nginx(dir: &Path) -> anyhow::Result<Server> {
    let (http, rtmp) = (free_port(), free_port());
    let hls = dir.join("hls");
    std::fs::create_dir_all(&hls)?;
    // The same HLS settings as onda's: 2 s fragments, 6 in the playlist.
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
         daemon off;\nuser root;\nworker_processes auto;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         rtmp {{ server {{ listen 127.0.0.1:{rtmp}; chunk_size 4096;\n\
           application live {{ live on; record off; hls on; hls_path {h}; hls_fragment 2s;\n\
             hls_playlist_length 12s; }} }} }}\n\
         http {{ access_log off; server {{ listen 127.0.0.1:{http};\n\
           location /hls/ {{ alias {h}/; types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}\n\
             add_header Cache-Control no-cache; }} }} }}\n",
        d = dir.display(),
        h = hls.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server {
        name: "nginx-rtmp",
        run: Running { child },
        rtmp: format!("rtmp://127.0.0.1:{rtmp}/live/bench-key-"),
        playlist: Box::new(move |i| format!("http://127.0.0.1:{http}/hls/bench-key-{i:04}.m3u8")),
        metrics: None,
    })
}

struct Report {
    name: &'static str,
    cpu_percent: f64,
    rss_mib: f64,
    /// Of it, anonymous memory (heap and stacks, without the binary's and libraries' pages).
    anon_mib: f64,
    latency_ms: Vec<f64>,
    streams_live: usize,
}

/// Segments of a playlist: (URI, duration ms), in order.
fn entries(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut d = None;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("#EXTINF:") {
            d = v
                .trim_end_matches(',')
                .split(',')
                .next()
                .and_then(|x| x.parse::<f64>().ok());
        } else if !l.starts_with('#')
            && !l.trim().is_empty()
            && let Some(d) = d.take()
        {
            out.push((l.trim().to_string(), d * 1000.0));
        }
    }
    out
}

async fn measure(
    server: Server,
    source: &Path,
    streams: usize,
    window: Duration,
) -> anyhow::Result<Report> {
    let http = onda_shared::http::client();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ticks = clock_ticks();
    let pid = server.run.child.id();
    let t0 = Instant::now();
    let mut publishers = Vec::new();
    for i in 0..streams {
        publishers.push(publisher(source, &format!("{}{i:04}", server.rtmp))?);
    }
    // Stream 0's segments as they appear: when first seen, and the media end each one has
    // (the sum of the durations of the segments before it and its own).
    let mut seen: Vec<(String, f64)> = Vec::new();
    let mut latencies = Vec::new();
    let mut media_end_ms = 0.0;
    let warmup = Duration::from_secs(8);
    let mut cpu_start = None;
    let end = t0 + warmup + window;
    while Instant::now() < end {
        if cpu_start.is_none() && t0.elapsed() >= warmup {
            cpu_start = Some((tree_cpu_seconds(pid, ticks), Instant::now()));
        }
        if let Ok(r) = http.get((server.playlist)(0)).send().await
            && r.status().is_success()
            && let Ok(text) = r.text().await
        {
            let now_ms = t0.elapsed().as_secs_f64() * 1000.0;
            for (uri, d) in entries(&text) {
                if !seen.iter().any(|(u, _)| *u == uri) {
                    media_end_ms += d;
                    latencies.push(now_ms - media_end_ms);
                    seen.push((uri, d));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cpu0, at0) = cpu_start.unwrap_or((0.0, t0));
    let cpu = tree_cpu_seconds(pid, ticks) - cpu0;
    let secs = at0.elapsed().as_secs_f64();
    let rss = tree_rss_kib(pid) as f64 / 1024.0;
    let anon = onda_tests::bench::tree_anon_kib(pid) as f64 / 1024.0;
    let mut live = 0;
    for i in 0..streams {
        if let Ok(r) = http.get((server.playlist)(i)).send().await
            && r.status().is_success()
        {
            live += 1;
        }
    }
    drop(publishers);
    // The first segment's latency includes the publisher's start; the steady ones matter.
    let steady = latencies.iter().skip(1).copied().collect();
    Ok(Report {
        name: server.name,
        cpu_percent: 100.0 * cpu / secs.max(0.001),
        rss_mib: rss,
        anon_mib: anon,
        latency_ms: steady,
        streams_live: live,
    })
}

/// The HTTP connections and requests a server counted so far, when it counts them.
async fn http_counts(metrics: Option<&str>) -> Option<(f64, f64)> {
    let text = onda_shared::http::get(metrics?)
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("onda_edge_http_connections_total ")?,
        value("onda_edge_http_requests_total ")?,
    ))
}

/// One glass-to-glass figure: a kind of player on one server.
struct Glass {
    what: String,
    latency_ms: Vec<f64>,
    stalls: usize,
    joins: usize,
    /// HTTP connections opened and requests made per viewer-minute, where the server counts
    /// them.
    per_viewer_minute: Option<(f64, f64)>,
}

/// Glass to glass on `server`: one publisher drawing its clock (1 s GOP), then for each mode
/// `joins` player sessions of `secs` one after another.
async fn glass_to_glass(
    server: Server,
    modes: &[Mode],
    joins: usize,
    secs: f64,
) -> anyhow::Result<Vec<Glass>> {
    let _publisher = Running {
        child: glass::publisher(&format!("{}0000", server.rtmp), 30)?,
    };
    let url = (server.playlist)(0);
    // Enough in the playlist for a plain HLS player's hold-back of 3 target durations.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let text = match onda_shared::http::get(&url).await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => String::new(),
        };
        if entries(&text).len() >= 4 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: the playlist never listed 4 segments",
            server.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out = Vec::new();
    for &mode in modes {
        let mut g = Glass {
            what: format!(
                "{} {}",
                server.name,
                if mode == Mode::Hls { "HLS" } else { "LL-HLS" }
            ),
            latency_ms: Vec::new(),
            stalls: 0,
            joins,
            per_viewer_minute: None,
        };
        let before = http_counts(server.metrics.as_deref()).await;
        for _ in 0..joins {
            // Players join at any moment, not just after a part or segment completed: a random
            // phase within one segment.
            let jitter = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() / 500_000);
            tokio::time::sleep(Duration::from_millis(u64::from(jitter))).await;
            let session = glass::play(&url, mode, secs).await?;
            let clock = glass::read_clock(&session.start)?;
            let offset = glass::clock_offset(&clock).context("no clock read")?;
            let (l, stalls) = glass::latencies(&session, offset);
            g.latency_ms.extend(l);
            g.stalls += stalls;
        }
        // The counters' own read is one connection and one request on each side; left out.
        if let (Some((c0, r0)), Some((c1, r1))) =
            (before, http_counts(server.metrics.as_deref()).await)
        {
            let minutes = joins as f64 * secs / 60.0;
            g.per_viewer_minute = Some(((c1 - c0 - 1.0) / minutes, (r1 - r0 - 1.0) / minutes));
        }
        eprintln!(
            "{}: median {:.0} ms over {} frames, {} stalls",
            g.what,
            percentile(&g.latency_ms, 0.5),
            g.latency_ms.len(),
            g.stalls
        );
        out.push(g);
    }
    Ok(out)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let streams: usize = arg("--streams").and_then(|v| v.parse().ok()).unwrap_or(10);
    let window = Duration::from_secs(arg("--window").and_then(|v| v.parse().ok()).unwrap_or(30));
    let part_ms: u64 = arg("--part-ms").and_then(|v| v.parse().ok()).unwrap_or(500);
    let joins: usize = arg("--joins").and_then(|v| v.parse().ok()).unwrap_or(8);
    let glass_secs: f64 = arg("--glass-secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(8.0);
    let onda = release_onda(arg("--onda"));
    let wrap = arg("--wrap");
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-live");
    std::fs::create_dir_all(&work)?;
    let source = source(&work)?;
    eprintln!(
        "{streams} streams of {}, window {window:?}",
        source.display()
    );
    let mut reports = Vec::new();
    for which in ["onda", "nginx"] {
        let dir = tempfile::tempdir()?;
        let server = match which {
            "onda" => start_onda(&onda, wrap.as_deref(), dir.path(), streams, part_ms)?,
            _ => start_nginx(dir.path())?,
        };
        let r = measure(server, &source, streams, window).await?;
        eprintln!(
            "{}: {:.1} % CPU, {:.1} MiB ({:.1} anonymous), {} of {streams} streams live, {} segments timed",
            r.name,
            r.cpu_percent,
            r.rss_mib,
            r.anon_mib,
            r.streams_live,
            r.latency_ms.len()
        );
        reports.push(r);
    }
    println!(
        "| server | streams live | CPU % (total) | CPU % per stream | RSS MiB | of it anonymous MiB | RSS MiB per stream | segment latency median ms | p95 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {}/{streams} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} |",
            r.name,
            r.streams_live,
            r.cpu_percent,
            r.cpu_percent / streams as f64,
            r.rss_mib,
            r.anon_mib,
            r.rss_mib / streams as f64,
            percentile(&r.latency_ms, 0.5),
            percentile(&r.latency_ms, 0.95)
        );
    }
    if let [o, n] = &reports[..] {
        println!(
            "\nonda / nginx-rtmp: CPU {:.2}×, RSS {:.2}×, median latency {:.2}×",
            o.cpu_percent / n.cpu_percent.max(0.001),
            o.rss_mib / n.rss_mib.max(0.001),
            percentile(&o.latency_ms, 0.5) / percentile(&n.latency_ms, 0.5)
        );
    }

    // Glass to glass, one stream at a time, with players that behave like hls.js.
    let mut glasses = Vec::new();
    for which in ["onda", "nginx"] {
        let dir = tempfile::tempdir()?;
        let (server, modes) = match which {
            "onda" => (
                start_onda(&onda, None, dir.path(), 1, part_ms)?,
                &[Mode::Hls, Mode::LowLatency][..],
            ),
            _ => (start_nginx(dir.path())?, &[Mode::Hls][..]),
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        glasses.extend(glass_to_glass(server, modes, joins, glass_secs).await?);
    }
    println!(
        "\nGlass to glass (clock drawn into 720p30 video, x264 zerolatency, 1 s GOP; segments 2 s, \
         onda parts {part_ms} ms; {joins} joins × {glass_secs} s per player):\n"
    );
    println!(
        "| player | latency median ms | p95 ms | stalls | frames | connections per viewer-minute | requests per viewer-minute |"
    );
    println!("|---|---|---|---|---|---|---|");
    for g in &glasses {
        let (conns, reqs) = g
            .per_viewer_minute
            .map_or(("-".into(), "-".into()), |(c, r)| {
                (format!("{c:.1}"), format!("{r:.1}"))
            });
        println!(
            "| {} | {:.0} | {:.0} | {} in {} joins | {} | {conns} | {reqs} |",
            g.what,
            percentile(&g.latency_ms, 0.5),
            percentile(&g.latency_ms, 0.95),
            g.stalls,
            g.joins,
            g.latency_ms.len()
        );
    }
    Ok(())
}

//! Benchmark (not a test): the AutoDJ of `onda edge` against Liquidsoap + Icecast 2 on the same
//! files, one after the other in the same run. Every station plays the same 6 generated tracks
//! (60–120 s, MP3 and FLAC sources, tagged; each station's playlist rotated so the stations are
//! out of step) into 3 MP3 mounts: 64, 128 and 320 kbps.
//!
//! - onda: one `onda edge` (release build) with `--stations` AutoDJs (default 30). Renditions
//!   are made once by ffmpeg at start (timed and reported apart); the steady window starts once
//!   every rendition is cached and no ffmpeg runs.
//! - Liquidsoap (Debian `liquidsoap`): one process per station running the usual
//!   `playlist() → output.icecast(%mp3(bitrate=…))` script with 3 outputs, into one Debian
//!   `icecast2` run as a plain process on a free loopback port. It starts with `--ls-stations`
//!   (default 30); if the machine does not sustain them (Liquidsoap logs that it must catch up,
//!   or the check listener gets audio slower than real time), it is measured again with fewer.
//!
//! CPU % is user + system time from `/proc/PID/stat` of every process of a side (onda and any
//! children; every liquidsoap and icecast2) over `--window` seconds (default 60) after a warm-up,
//! divided by wall time; RSS is the sum of VmRSS at the end of the window. A listener on the
//! 128 kbps mount of each side's last station counts the audio received by its frame headers
//! over the window (rate 1.00 = real time), and ffprobe reads the first station's 64 kbps mount.
//!
//! Run with `scripts/bench-autodj.sh` (installs liquidsoap and icecast2, builds release
//! binaries). Options: `--stations N` `--ls-stations N` `--window SECS` `--warmup SECS`
//! `--sides onda,liquidsoap` `--onda PATH`.

use onda_tests::bench::{
    FrameListener, KillTree, Track, arg, clock_ticks, make_tracks, release_onda, track_toml, tree,
    tree_cpu_seconds, tree_rss_kib,
};
use onda_tests::process::{Proc, free_port};
use std::path::Path;
use std::time::{Duration, Instant};

const BITRATES: [u32; 3] = [64, 128, 320];

struct Measured {
    side: String,
    stations: usize,
    processes: usize,
    cpu_pct: f64,
    rss_kib: u64,
    /// Of which icecast2 (Liquidsoap side).
    server_cpu_pct: f64,
    server_rss_kib: u64,
    /// Audio received by the check listener over the window / the window.
    rate: f64,
    kbps: u32,
    sample_rate: u32,
    probe: String,
    sustained: bool,
    note: String,
}

fn mount(station: usize, kbps: u32) -> String {
    format!("/s{station}-{kbps}.mp3")
}

/// The tracks in station `i`'s order: rotated by `i`.
fn rotated(tracks: &[Track], i: usize) -> Vec<Track> {
    let mut v = tracks.to_vec();
    v.rotate_left(i % tracks.len().max(1));
    v
}

async fn probe(url: &str) -> String {
    let mut p = Proc::external(
        "ffprobe",
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate,bit_rate",
            "-of",
            "csv=p=0",
            url,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(s) = p.try_exit() {
            return if s.success() {
                p.stdout().trim().to_string()
            } else {
                format!("ffprobe failed: {}", p.stderr().trim())
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    "ffprobe timed out".to_string()
}

/// Waits until `status-json.xsl` at `addr` lists at least `n` mounts with a source.
async fn wait_sources(addr: &str, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while Instant::now() < deadline {
        if let Ok(r) = onda_shared::http::get(format!("http://{addr}/status-json.xsl")).await
            && let Ok(t) = r.text().await
        {
            seen = t.matches("\"listenurl\"").count();
            if seen >= n {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("only {seen} of {n} mounts had a source after {timeout:?}")
}

/// CPU seconds and RSS of a set of process trees.
fn totals(pids: &[u32], ticks: f64) -> (f64, u64) {
    pids.iter().fold((0.0, 0), |(c, r), &p| {
        (c + tree_cpu_seconds(p, ticks), r + tree_rss_kib(p))
    })
}

struct Window {
    cpu_pct: Vec<f64>,
    rss_kib: Vec<u64>,
    rate: f64,
    kbps: u32,
    sample_rate: u32,
}

/// Measures each group of process trees over `window` while `listener` reads.
async fn measure(
    groups: &[Vec<u32>],
    listener: &FrameListener,
    window: Duration,
    ticks: f64,
) -> anyhow::Result<Window> {
    let cpu0: Vec<f64> = groups.iter().map(|g| totals(g, ticks).0).collect();
    let (a0, t0) = (listener.audio().0, Instant::now());
    tokio::time::sleep(window).await;
    let (a1, closed) = listener.audio();
    let wall = t0.elapsed().as_secs_f64();
    anyhow::ensure!(!closed, "the check listener was disconnected");
    let end: Vec<(f64, u64)> = groups.iter().map(|g| totals(g, ticks)).collect();
    let r = listener.received();
    Ok(Window {
        cpu_pct: end
            .iter()
            .zip(&cpu0)
            .map(|((c1, _), c0)| (c1 - c0) / wall * 100.0)
            .collect(),
        rss_kib: end.iter().map(|e| e.1).collect(),
        rate: (a1 - a0).as_secs_f64() / wall,
        kbps: r.last_kbps,
        sample_rate: r.last_rate,
    })
}

struct Opts {
    window: Duration,
    warmup: Duration,
    ticks: f64,
}

async fn run_onda(
    onda: &Path,
    work: &Path,
    tracks: &[Track],
    stations: usize,
    o: &Opts,
) -> anyhow::Result<(Measured, String)> {
    let dir = work.join("onda");
    std::fs::create_dir_all(&dir)?;
    let cache = dir.join("cache");
    let mut toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[media]\ncache_dir = \"{}\"\n\n",
        cache.display()
    );
    for i in 0..stations {
        for kbps in BITRATES {
            toml += &format!("[[mounts]]\npath = \"{}\"\n\n", mount(i, kbps));
        }
    }
    for i in 0..stations {
        let outputs: Vec<String> = BITRATES
            .iter()
            .map(|&k| {
                format!(
                    "{{ mount = \"{}\", format = \"mp3\", bitrate_kbps = {k} }}",
                    mount(i, k)
                )
            })
            .collect();
        toml += &format!(
            "[[autodj]]\nname = \"Station {i}\"\norder = \"sequential\"\noutputs = [{}]\n\n",
            outputs.join(", ")
        );
        for t in rotated(tracks, i) {
            toml += &track_toml(&t);
        }
        toml += "\n";
    }
    let cfg = dir.join("edge.toml");
    std::fs::write(&cfg, toml)?;
    let cfg = cfg.to_string_lossy().to_string();

    let started = Instant::now();
    let mut edge = KillTree(Proc::external(
        "onda edge",
        &onda.to_string_lossy(),
        &["edge", "--config", &cfg],
    ));
    let pid = edge.0.pid();
    let url = edge
        .0
        .wait_log_word("edge listening on ", Duration::from_secs(30))
        .await;
    let addr = url.trim_start_matches("http://").to_string();

    // Each station starts its first track and encodes its second: with the playlists rotated,
    // every (track, bitrate) is encoded at start. Done when all are cached and no ffmpeg runs.
    let wanted = BITRATES.len() * tracks.len().min(stations + 1);
    let deadline = started + Duration::from_secs(900);
    let encoding = loop {
        let done = std::fs::read_dir(&cache).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".mp3"))
                .count()
        });
        if done >= wanted && tree(pid).len() == 1 {
            break started.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "renditions not ready after 900 s ({done}/{wanted})\n{}",
            edge.0.logs()
        );
        anyhow::ensure!(
            edge.0.try_exit().is_none(),
            "onda edge exited\n{}",
            edge.0.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let encoding_cpu = tree_cpu_seconds(pid, o.ticks);
    let encoding_note = format!(
        "onda renditions: {wanted} files ({} tracks × {} bitrates) ready {:.1} s after start, \
         {encoding_cpu:.1} CPU s (onda + ffmpeg, start-up included; at most 2 encodes at once)",
        wanted / BITRATES.len(),
        BITRATES.len(),
        encoding.as_secs_f64()
    );
    eprintln!("{encoding_note}");
    wait_sources(&addr, stations * BITRATES.len(), Duration::from_secs(30)).await?;

    let check = mount(stations - 1, 128);
    let listener = FrameListener::connect(&addr, &check, false, false).await?;
    tokio::time::sleep(o.warmup).await;
    let w = measure(&[vec![pid]], &listener, o.window, o.ticks).await?;
    let during = tree(pid).len() - 1;
    let probe = probe(&format!("http://{addr}{}", mount(0, 64))).await;
    let m = Measured {
        side: "onda edge".into(),
        stations,
        processes: tree(pid).len(),
        cpu_pct: w.cpu_pct[0],
        rss_kib: w.rss_kib[0],
        server_cpu_pct: 0.0,
        server_rss_kib: 0,
        rate: w.rate,
        kbps: w.kbps,
        sample_rate: w.sample_rate,
        probe,
        sustained: (0.97..=1.03).contains(&w.rate),
        note: if during > 0 {
            format!("{during} ffmpeg running at the window's end")
        } else {
            String::new()
        },
    };
    eprintln!("onda: {:.1} % CPU, {} KiB RSS", m.cpu_pct, m.rss_kib);
    Ok((m, encoding_note))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}

/// Lines in which Liquidsoap says it is late.
fn late_lines(procs: &[Proc]) -> usize {
    procs
        .iter()
        .map(|p| {
            let out = p.stdout() + &p.stderr();
            out.matches("catchup").count() + out.matches("Too much latency").count()
        })
        .sum()
}

/// The peer's icecast2 configuration: on `port`, room for `sources` sources, logs in `dir`.
fn icecast_xml(dir: &Path, port: u16, sources: usize) -> String {
    format!(
        r#"<icecast>
  <location>bench</location><admin>bench@localhost</admin><hostname>127.0.0.1</hostname>
  <limits><clients>{clients}</clients><sources>{sources}</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>65536</burst-size></limits>
  <authentication><source-password>hackme</source-password><admin-user>admin</admin-user><admin-password>admin-bench</admin-password></authentication>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <paths><basedir>/usr/share/icecast2</basedir><logdir>{d}</logdir><webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot><changeowner><user>icecast2</user><group>icecast</group></changeowner></security>
</icecast>"#,
        clients = sources + 100,
        d = dir.display()
    )
}

/// Writes station `i`'s playlist and Liquidsoap script (one MP3 output per bitrate to icecast2
/// on `port`) into `dir`; answers the script's path.
fn liquidsoap_script(
    dir: &Path,
    tracks: &[Track],
    (i, port): (usize, u16),
    root: bool,
) -> anyhow::Result<std::path::PathBuf> {
    let list = dir.join(format!("s{i}.m3u"));
    let lines: Vec<String> = rotated(tracks, i)
        .iter()
        .map(|t| t.file.display().to_string())
        .collect();
    std::fs::write(&list, lines.join("\n") + "\n")?;
    let mut liq = String::new();
    if root {
        // Liquidsoap refuses to run as root unless told to (the benchmark may run as root).
        liq += "settings.init.allow_root.set(true)\n";
    }
    liq += &format!(
        "settings.log.stdout.set(true)\nsettings.log.file.set(false)\nsettings.log.level.set(3)\n\
         s = mksafe(playlist(mode=\"normal\", reload_mode=\"never\", \"{}\"))\n",
        list.display()
    );
    for kbps in BITRATES {
        liq += &format!(
            "output.icecast(%mp3(bitrate={kbps}), host=\"127.0.0.1\", port={port}, \
             password=\"hackme\", mount=\"{}\", name=\"Station {i}\", s)\n",
            mount(i, kbps)
        );
    }
    let script = dir.join(format!("s{i}.liq"));
    std::fs::write(&script, liq)?;
    Ok(script)
}

async fn run_liquidsoap(
    work: &Path,
    tracks: &[Track],
    stations: usize,
    o: &Opts,
) -> anyhow::Result<Measured> {
    let dir = work.join(format!("liquidsoap-{stations}"));
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // icecast2 drops to its own user and must write its logs here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sources = stations * BITRATES.len() + 8;
    let xml = icecast_xml(&dir, port, sources);
    let cfg = dir.join("icecast.xml");
    std::fs::write(&cfg, xml)?;
    let icecast = Proc::external("icecast2", "icecast2", &["-c", &cfg.to_string_lossy()]);
    wait_sources(&addr, 0, Duration::from_secs(20)).await?;

    let root = is_root();
    let mut procs = Vec::new();
    for i in 0..stations {
        let script = liquidsoap_script(&dir, tracks, (i, port), root)?;
        procs.push(Proc::external(
            &format!("liquidsoap {i}"),
            "liquidsoap",
            &[&script.to_string_lossy()],
        ));
    }
    let started = Instant::now();
    wait_sources(&addr, stations * BITRATES.len(), Duration::from_secs(300)).await?;
    eprintln!(
        "liquidsoap: {stations} stations on the air after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let check = mount(stations - 1, 128);
    let listener = FrameListener::connect(&addr, &check, false, false).await?;
    tokio::time::sleep(o.warmup).await;
    let late0 = late_lines(&procs);
    let ls_pids: Vec<u32> = procs.iter().map(Proc::pid).collect();
    let w = measure(
        &[ls_pids.clone(), vec![icecast.pid()]],
        &listener,
        o.window,
        o.ticks,
    )
    .await?;
    let late = late_lines(&procs) - late0;
    let exited = procs.iter_mut().filter_map(|p| p.try_exit()).count();
    let probe = probe(&format!("http://{addr}{}", mount(0, 64))).await;
    let processes: usize = ls_pids.iter().map(|&p| tree(p).len()).sum::<usize>() + 1;
    let sustained = late == 0 && exited == 0 && (0.97..=1.03).contains(&w.rate);
    let m = Measured {
        side: "liquidsoap + icecast2".into(),
        stations,
        processes,
        cpu_pct: w.cpu_pct[0] + w.cpu_pct[1],
        rss_kib: w.rss_kib[0] + w.rss_kib[1],
        server_cpu_pct: w.cpu_pct[1],
        server_rss_kib: w.rss_kib[1],
        rate: w.rate,
        kbps: w.kbps,
        sample_rate: w.sample_rate,
        probe,
        sustained,
        note: [
            (late > 0).then(|| format!("{late} catch-up/latency warnings in the window")),
            (exited > 0).then(|| format!("{exited} liquidsoap exited")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; "),
    };
    eprintln!(
        "liquidsoap {stations}: {:.1} % CPU, {} KiB RSS, rate {:.3}, {}",
        m.cpu_pct, m.rss_kib, m.rate, m.note
    );
    drop(listener);
    drop(procs);
    drop(icecast);
    Ok(m)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let stations: usize = arg("--stations").and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut ls_stations: usize = arg("--ls-stations")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    anyhow::ensure!(stations >= 1 && ls_stations >= 1, "at least one station");
    let o = Opts {
        window: Duration::from_secs(arg("--window").and_then(|s| s.parse().ok()).unwrap_or(60)),
        warmup: Duration::from_secs(arg("--warmup").and_then(|s| s.parse().ok()).unwrap_or(20)),
        ticks: clock_ticks(),
    };
    let sides = arg("--sides").unwrap_or_else(|| "onda,liquidsoap".to_string());
    let onda = release_onda(arg("--onda"));
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);

    let work = tempfile::tempdir()?;
    let t0 = Instant::now();
    let tracks = make_tracks(work.path())?;
    eprintln!(
        "made {} tracks ({} s in all) in {:.1} s",
        tracks.len(),
        tracks.iter().map(|t| t.secs).sum::<u32>(),
        t0.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    if sides.contains("onda") {
        anyhow::ensure!(
            onda.exists(),
            "{} is missing: build it with `cargo build --release --bin onda`",
            onda.display()
        );
        let (m, note) = run_onda(&onda, work.path(), &tracks, stations, &o).await?;
        rows.push(m);
        notes.push(note);
    }
    if sides.contains("liquidsoap") {
        // As many stations as the machine sustains: measured again with fewer while Liquidsoap
        // falls behind. A starved attempt's CPU understates what it needs, so the next count is
        // the smaller of two estimates: 80 % of the cores at the CPU per station measured, and
        // 90 % of the share of real time the check listener got.
        for _ in 0..4 {
            let m = run_liquidsoap(work.path(), &tracks, ls_stations, &o).await?;
            let (ok, n, cpu, rate) = (m.sustained, m.stations, m.cpu_pct, m.rate);
            rows.push(m);
            if ok || n == 1 {
                break;
            }
            let by_cpu = n as f64 * cores as f64 * 80.0 / cpu.max(1.0);
            let by_rate = n as f64 * rate.min(1.0) * 0.9;
            ls_stations = (by_cpu.min(by_rate) as usize).clamp(1, n - 1);
        }
    }

    print_results(&rows, &notes);
    Ok(())
}

/// The table of every attempt, the probes, the notes and the per-station ratios.
fn print_results(rows: &[Measured], notes: &[String]) {
    println!(
        "| side | stations × mounts | processes | CPU % | CPU % per station | RSS MiB | RSS MiB per station | check listener (rate, frames) | sustained |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mib = |k: u64| k as f64 / 1024.0;
    for m in rows {
        let n = m.stations as f64;
        let server = if m.server_rss_kib > 0 {
            format!(
                " (icecast2 {:.1} % / {:.1} MiB)",
                m.server_cpu_pct,
                mib(m.server_rss_kib)
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {} × 3 | {} | {:.1}{server} | {:.2} | {:.1} | {:.2} | {:.3}, {} kbps {} Hz | {}{} |",
            m.side,
            m.stations,
            m.processes,
            m.cpu_pct,
            m.cpu_pct / n,
            mib(m.rss_kib),
            mib(m.rss_kib) / n,
            m.rate,
            m.kbps,
            m.sample_rate,
            if m.sustained { "yes" } else { "no" },
            if m.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", m.note)
            }
        );
    }
    println!();
    for m in rows {
        println!("ffprobe {} {}: {}", m.side, mount(0, 64), m.probe);
    }
    for n in notes {
        println!("{n}");
    }
    let onda_row = rows.iter().find(|m| m.side.starts_with("onda"));
    let ls_row = rows
        .iter()
        .rev()
        .find(|m| m.side.starts_with("liquidsoap") && m.sustained)
        .or_else(|| rows.iter().rev().find(|m| m.side.starts_with("liquidsoap")));
    if let (Some(a), Some(b)) = (onda_row, ls_row) {
        let per = |m: &Measured, v: f64| v / m.stations as f64;
        let cpu = per(a, a.cpu_pct) / per(b, b.cpu_pct).max(1e-9);
        let rss = per(a, a.rss_kib as f64) / per(b, b.rss_kib as f64).max(1e-9);
        let cpu_ls = per(a, a.cpu_pct) / per(b, b.cpu_pct - b.server_cpu_pct).max(1e-9);
        let rss_ls =
            per(a, a.rss_kib as f64) / per(b, (b.rss_kib - b.server_rss_kib) as f64).max(1e-9);
        println!(
            "per station, onda ({} stations) / liquidsoap + icecast2 ({} stations{}): CPU {cpu:.3}, RSS {rss:.3} \
             (against liquidsoap alone: CPU {cpu_ls:.3}, RSS {rss_ls:.3}); target ≤ 0.1",
            a.stations,
            b.stations,
            if b.sustained { "" } else { ", not sustained" }
        );
    }
}

//! Benchmark (not a test): AutoDJ drift. One `onda edge` (release build) plays one AutoDJ
//! station (6 generated tracks of 60–120 s, MP3 and FLAC sources, sequential, looping) into an
//! MP3 128 kbps mount and an AAC 64 kbps mount; one plain listener per mount reads for
//! `--seconds` (default 3600) and counts the audio it receives by the frame headers (samples /
//! sample rate). It reports the audio received minus the wall time that passed.
//!
//! The initial burst: a new listener gets the mount's burst (64 KiB, about 4 s at 128 kbps) plus
//! whatever the AutoDJ is ahead of real time (at most 0.5 s) at once, so audio − wall jumps by
//! that much at connect and then only jitters (AutoDJ ticks of 100 ms, batches of 600 ms). The
//! drift is therefore measured from a baseline taken after the burst: the median of
//! (audio − wall) over the first `W` seconds starting 5 s after connect, against the median over
//! the last `W` seconds (`W` = 60 s, or a tenth of a shorter run). That is "audio received minus
//! wall time, burst subtracted". The least-squares slope of audio over wall time after the burst
//! is reported too, as drift per hour.
//!
//! Run with `scripts/bench-autodj.sh drift [--seconds N]`, or directly after a release build:
//! `bench-autodj-drift --seconds 600 [--onda PATH]`.

use onda_tests::bench::{
    FrameListener, KillTree, Track, arg, make_tracks, release_onda, track_toml,
};
use onda_tests::process::Proc;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(5);

struct Outcome {
    mount: &'static str,
    listened: f64,
    burst: f64,
    drift: f64,
    span: f64,
    slope_per_hour: f64,
    kbps: u32,
    rate: u32,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn analyse(mount: &'static str, l: &FrameListener, window: f64) -> Outcome {
    let r = l.received();
    let pts: Vec<(f64, f64)> = r
        .samples
        .iter()
        .map(|(t, a)| (t.as_secs_f64(), a.as_secs_f64()))
        .collect();
    let listened = pts.last().map_or(0.0, |p| p.0);
    let start = SETTLE.as_secs_f64();
    let offsets = |from: f64, to: f64| -> Vec<f64> {
        pts.iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(t, a)| a - t)
            .collect()
    };
    let first = median(offsets(start, start + window));
    let last = median(offsets(listened - window, listened));
    // Least squares of audio over wall time after the burst.
    let after: Vec<&(f64, f64)> = pts.iter().filter(|(t, _)| *t >= start).collect();
    let n = after.len() as f64;
    let (mt, ma) = (
        after.iter().map(|p| p.0).sum::<f64>() / n,
        after.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = after.iter().map(|p| (p.0 - mt) * (p.1 - ma)).sum();
    let var: f64 = after.iter().map(|p| (p.0 - mt).powi(2)).sum();
    Outcome {
        mount,
        listened,
        burst: first,
        drift: last - first,
        span: listened - window - start,
        slope_per_hour: (cov / var - 1.0) * 3600.0,
        kbps: r.last_kbps,
        rate: r.last_rate,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = arg("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    anyhow::ensure!(seconds >= 60, "--seconds must be at least 60");
    let onda = release_onda(arg("--onda"));
    anyhow::ensure!(
        onda.exists(),
        "{} is missing: build it with `cargo build --release --bin onda`",
        onda.display()
    );
    let work = tempfile::tempdir()?;
    let t0 = Instant::now();
    let tracks = make_tracks(work.path())?;
    eprintln!(
        "made {} tracks ({} s in all) in {:.1} s",
        tracks.len(),
        tracks.iter().map(|t| t.secs).sum::<u32>(),
        t0.elapsed().as_secs_f64()
    );
    let config = edge_config(work.path(), &tracks);
    let cfg = work.path().join("edge.toml");
    std::fs::write(&cfg, config)?;
    let cfg = cfg.to_string_lossy().to_string();
    let mut edge = KillTree(Proc::external(
        "onda edge",
        &onda.to_string_lossy(),
        &["edge", "--config", &cfg],
    ));
    run(&mut edge.0, seconds).await
}

/// The standalone edge's configuration: one AutoDJ playing `tracks` in order into an MP3 and
/// an AAC mount.
fn edge_config(work: &std::path::Path, tracks: &[Track]) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[media]\ncache_dir = \"{}\"\n\n\
         [[mounts]]\npath = \"/drift.mp3\"\n\n[[mounts]]\npath = \"/drift.aac\"\n\n\
         [[autodj]]\nname = \"Drift FM\"\norder = \"sequential\"\n\
         outputs = [{{ mount = \"/drift.mp3\", format = \"mp3\", bitrate_kbps = 128 }}, \
         {{ mount = \"/drift.aac\", format = \"aac\", bitrate_kbps = 64 }}]\n\n{}",
        work.join("cache").display(),
        tracks.iter().map(track_toml).collect::<String>()
    )
}

async fn run(edge: &mut Proc, seconds: u64) -> anyhow::Result<()> {
    let url = edge
        .wait_log_word("edge listening on ", Duration::from_secs(30))
        .await;
    let addr = url.trim_start_matches("http://").to_string();

    // The station is on the air once a probe listener receives audio on both mounts; the
    // measuring listeners connect after that, so they start with the ordinary burst.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (mount, aac) in [("/drift.mp3", false), ("/drift.aac", true)] {
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{mount} carried no audio within 60 s\n{}",
                edge.logs()
            );
            if let Ok(probe) = FrameListener::connect(&addr, mount, aac, false).await {
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until && probe.audio().0 < Duration::from_secs(1) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if probe.audio().0 >= Duration::from_secs(1) {
                    break;
                }
            }
        }
    }
    let mp3 = FrameListener::connect(&addr, "/drift.mp3", false, true).await?;
    let aac = FrameListener::connect(&addr, "/drift.aac", true, true).await?;
    let start = Instant::now();
    let total = Duration::from_secs(seconds);
    let mut next_report = Duration::from_secs(60);
    // The measurement window: the listeners read for `seconds` of wall time.
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let report = start.elapsed() >= next_report;
        if report {
            next_report += Duration::from_secs(60);
        }
        for (name, l) in [("mp3", &mp3), ("aac", &aac)] {
            let (audio, closed) = l.audio();
            anyhow::ensure!(
                !closed,
                "the {name} listener was disconnected after {:.0} s\n{}",
                l.connected_at.elapsed().as_secs_f64(),
                edge.logs()
            );
            if report {
                let t = l.connected_at.elapsed().as_secs_f64();
                eprintln!(
                    "{t:>5.0} s {name}: audio {:.2} s, audio − wall {:+.3} s",
                    audio.as_secs_f64(),
                    audio.as_secs_f64() - t
                );
            }
        }
    }
    let window = (seconds as f64 / 10.0).min(60.0);
    let rows = [
        analyse("/drift.mp3", &mp3, window),
        analyse("/drift.aac", &aac, window),
    ];
    let logs = edge.stderr();
    let changes = logs.matches("playing ").count();
    println!(
        "| mount | listened | burst + lead at start | audio − wall after the burst | over | per hour (ends) | per hour (slope) | frames |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for o in &rows {
        println!(
            "| {} | {:.0} s | {:.2} s | {:+.3} s | {:.0} s | {:+.3} s | {:+.3} s | {} kbps, {} Hz |",
            o.mount,
            o.listened,
            o.burst,
            o.drift,
            o.span,
            o.drift * 3600.0 / o.span,
            o.slope_per_hour,
            o.kbps,
            o.rate
        );
    }
    println!();
    println!(
        "{changes} tracks started during the run (6 tracks, 540 s per round); target ±1 s per hour"
    );
    Ok(())
}

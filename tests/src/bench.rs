//! Helpers shared by the AutoDJ benchmarks (`bench-autodj`, `bench-autodj-drift`): music-like
//! tagged tracks made by ffmpeg, CPU and memory of process trees from `/proc`, and a listener
//! that counts the audio it receives by its frame headers.

use onda_edge::frames::{self, Parser};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One generated track: its file and tags.
#[derive(Debug, Clone)]
pub struct Track {
    pub file: PathBuf,
    pub artist: String,
    pub title: String,
    pub secs: u32,
}

/// The benchmark's tracks: 6 files of 60–120 s, MP3 (VBR, ID3 tags) and FLAC (Vorbis
/// comments) in turn, 44.1 kHz stereo. The signal is two tones with a slow tremolo over pink
/// noise — closer to music than a pure sine for an MP3 encoder (a sine encodes unusually
/// cheaply, which would flatter the peer that encodes while playing).
pub fn make_tracks(dir: &Path) -> anyhow::Result<Vec<Track>> {
    let mut tracks = Vec::new();
    for i in 0..6u32 {
        let secs = 60 + 12 * i;
        let ext = if i % 2 == 0 { "mp3" } else { "flac" };
        let file = dir.join(format!("track-{i}.{ext}"));
        let (f1, f2) = (220 + 55 * i, 330 + 77 * i);
        let graph = format!(
            "sine=f={f1}:r=44100:d={secs}[a];sine=f={f2}:r=44100:d={secs}[b];\
             anoisesrc=c=pink:r=44100:a=0.08:d={secs}[n];\
             [a][b][n]amix=inputs=3,tremolo=f=0.7:d=0.5,pan=stereo|c0=c0|c1=0.8*c0[out]"
        );
        let (artist, title) = (format!("Bench Artist {i}"), format!("Bench Track {i}"));
        let mut cmd = std::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-filter_complex", &graph, "-map", "[out]"])
            .args(["-metadata", &format!("artist={artist}")])
            .args(["-metadata", &format!("title={title}")]);
        if ext == "mp3" {
            cmd.args(["-c:a", "libmp3lame", "-q:a", "2"]);
        }
        let out = cmd.arg(&file).output()?;
        anyhow::ensure!(
            out.status.success(),
            "ffmpeg could not make {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        tracks.push(Track {
            file,
            artist,
            title,
            secs,
        });
    }
    Ok(tracks)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/PID/stat` after the command name (index 0 is the state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            stat_fields(p)
                .and_then(|f| f.get(1).and_then(|v| v.parse::<u32>().ok()))
                .is_some_and(|ppid| ppid == pid)
        })
        .collect()
}

/// `pid` and all its live descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// CPU seconds used by `pid` and its descendants: each live process's user + system time plus
/// that of its children already reaped (cutime + cstime), so a child that exits between two
/// readings is neither lost nor counted twice.
pub fn tree_cpu_seconds(pid: u32, ticks: f64) -> f64 {
    tree(pid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            // utime, stime, cutime, cstime are fields 14–17 of stat: 11–14 here.
            (11..=14)
                .filter_map(|i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
                .sum::<f64>()
        })
        .sum::<f64>()
        / ticks
}

/// Resident memory of `pid` and its descendants (sum of VmRSS), in KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().map(rss_kib).sum()
}

pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A `/proc/{pid}/status` figure in KiB (`VmRSS`, `RssAnon`, `RssFile`, …); 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// Anonymous resident memory of `pid` and its descendants (heap, stacks: what the program
/// itself holds, without the pages of its binary and libraries), in KiB.
pub fn tree_anon_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .map(|p| status_kib(p, "RssAnon"))
        .sum()
}

/// Kills (SIGKILL) the live descendants of `pid`, deepest first (e.g. the ffmpeg encoders of an
/// `onda edge` about to be stopped).
pub fn kill_descendants(pid: u32) {
    if pid <= 1 {
        return;
    }
    let mut all = tree(pid);
    all.remove(0);
    for p in all.into_iter().rev() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
}

/// A process whose descendants are killed before it is (on drop, also on error or panic).
pub struct KillTree(pub crate::process::Proc);

impl Drop for KillTree {
    fn drop(&mut self) {
        kill_descendants(self.0.pid());
    }
}

/// What a [`FrameListener`] has received.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub head: String,
    /// Audio received, by the frame headers' samples / rate.
    pub audio: Duration,
    pub frames: u64,
    pub bytes: u64,
    /// (time since connect, audio received by then), after each read.
    pub samples: Vec<(Duration, Duration)>,
    /// Bitrate (kbps) and sample rate of the last frame.
    pub last_kbps: u32,
    pub last_rate: u32,
    pub closed: bool,
}

/// A plain HTTP listener (no ICY metadata) that parses the frames it receives and records how
/// much audio has arrived when.
#[derive(Debug)]
pub struct FrameListener {
    pub received: Arc<Mutex<Received>>,
    pub connected_at: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl FrameListener {
    /// Connects to `http://ADDR{path}`; `aac` picks the ADTS parser instead of MPEG audio.
    /// `keep_samples` records a (time, audio) point after every read.
    pub async fn connect(
        addr: &str,
        path: &str,
        aac: bool,
        keep_samples: bool,
    ) -> anyhow::Result<FrameListener> {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: onda-bench\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let connected_at = Instant::now();
        let received = Arc::new(Mutex::new(Received::default()));
        let r = received.clone();
        let parse: Parser = if aac { frames::adts } else { frames::mpeg };
        let task = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            let mut in_body = false;
            loop {
                let n = match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut g = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if !in_body {
                    let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    g.head = String::from_utf8_lossy(&buf[..i]).to_string();
                    buf.drain(..i + 4);
                    in_body = true;
                }
                g.bytes += n as u64;
                let mut at = 0;
                while buf.len() - at >= 8 {
                    match parse(&buf[at..]) {
                        Some(f) if f.duration_ns() > 0 => {
                            if buf.len() - at < f.len {
                                break;
                            }
                            g.audio += Duration::from_nanos(f.duration_ns());
                            g.frames += 1;
                            g.last_rate = f.rate;
                            // Constant bitrate: bits per frame over its duration.
                            let per = u64::from(f.samples) * 1000;
                            g.last_kbps =
                                ((f.len as u64 * 8 * u64::from(f.rate) + per / 2) / per) as u32;
                            at += f.len;
                        }
                        // Not a frame here: resynchronise at the next byte.
                        _ => at += 1,
                    }
                }
                buf.drain(..at);
                if keep_samples {
                    let point = (connected_at.elapsed(), g.audio);
                    g.samples.push(point);
                }
            }
            r.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .closed = true;
        });
        Ok(FrameListener {
            received,
            connected_at,
            task,
        })
    }

    pub fn received(&self) -> Received {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Audio received so far (without cloning the samples).
    pub fn audio(&self) -> (Duration, bool) {
        let g = self
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (g.audio, g.closed)
    }
}

impl Drop for FrameListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The command that runs `onda`: as it is, or under `wrap` (`--wrap "heaptrack -o FILE"`: a
/// heap profiler, whose CPU and RSS figures are then its own and not comparable).
pub fn onda_command(onda: &Path, wrap: Option<&str>) -> std::process::Command {
    match wrap.map(str::split_whitespace) {
        Some(mut words) => {
            let mut c = std::process::Command::new(words.next().unwrap_or("env"));
            c.args(words).arg(onda);
            c
        }
        None => std::process::Command::new(onda),
    }
}

/// The release `onda` binary: `--onda PATH`, else `$CARGO_TARGET_DIR/release/onda`, else the
/// workspace's `target/release/onda`. Always absolute: the benchmarks start servers in
/// directories of their own, where a path relative to the caller's directory names nothing.
pub fn release_onda(arg: Option<String>) -> PathBuf {
    let path = match (arg, std::env::var_os("CARGO_TARGET_DIR")) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(target)) => PathBuf::from(target).join("release").join("onda"),
        (None, None) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("release")
            .join("onda"),
    };
    std::path::absolute(&path).unwrap_or(path)
}

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// TOML lines of one AutoDJ track.
pub fn track_toml(t: &Track) -> String {
    format!(
        "[[autodj.tracks]]\nfile = \"{}\"\nartist = \"{}\"\ntitle = \"{}\"\n",
        t.file.display(),
        t.artist,
        t.title
    )
}

/// Runs a benchmark's `bench` on a multi-threaded runtime with the TLS provider installed, and
/// exits 1 when it says it failed. Everything the benchmark started is dropped (its processes
/// stopped) inside the runtime, before the exit, which would run no destructor.
pub fn main_of(bench: impl std::future::Future<Output = bool>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ok = rt.block_on(bench);
    drop(rt);
    if !ok {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_onda_binary_is_named_by_an_absolute_path() {
        let p = release_onda(Some("target/release/onda".to_string()));
        assert!(p.is_absolute(), "{}", p.display());
        assert!(p.ends_with("target/release/onda"), "{}", p.display());
        assert!(release_onda(None).is_absolute());
    }
}

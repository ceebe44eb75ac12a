//! Helpers for edge-node tests: a real `onda edge` on a free port, ffmpeg as a source client, and
//! raw listeners that speak ICY and record what they hear.

use crate::process::Proc;
use crate::wait_for;
use bytes::Bytes;
use onda_edge::icy::{Deinterleaver, stream_title};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub const START: Duration = Duration::from_secs(30);

pub struct EdgeNode {
    pub proc: Proc,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub admin: (String, String),
}

impl EdgeNode {
    /// Starts `onda edge` with `[http] listen = 127.0.0.1:0`, an admin password, and `rest` of
    /// the TOML (mounts, limits, relays).
    pub async fn start(rest: &str) -> EdgeNode {
        let dir = tempfile::tempdir().expect("dir");
        let toml = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nuser = \"admin\"\npassword = \"admin-secret\"\n\n{rest}"
        );
        std::fs::write(dir.path().join("edge.toml"), toml).expect("write config");
        let mut proc = Proc::start_in("onda edge", dir, &["edge", "--config", "edge.toml"], &[]);
        let url = proc.wait_log_word("edge listening on ", START).await;
        EdgeNode {
            proc,
            addr: url.trim_start_matches("http://").to_string(),
            admin: ("admin".into(), "admin-secret".into()),
        }
    }

    /// Like [`EdgeNode::start`] with RTMP on a free loopback port; returns the node and its
    /// `rtmp://127.0.0.1:PORT` address.
    pub async fn start_live(rest: &str) -> (EdgeNode, String) {
        let mut node = Self::start(&format!("[rtmp]\nlisten = \"127.0.0.1:0\"\n\n{rest}")).await;
        let addr = node.proc.wait_log_word("RTMP ingest on ", START).await;
        (node, addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `icecast://source:PASSWORD@ADDR/MOUNT` for ffmpeg.
    pub fn icecast_url(&self, mount: &str, password: &str) -> String {
        format!("icecast://source:{password}@{}{mount}", self.addr)
    }

    pub async fn status(&self) -> Value {
        onda_shared::http::get(self.url("/status-json.xsl"))
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    /// The status-json source object of `mount`, if a source feeds it.
    pub async fn source_status(&self, mount: &str) -> Option<Value> {
        let status = self.status().await;
        let sources = match &status["icestats"]["source"] {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            one => vec![one.clone()],
        };
        sources
            .into_iter()
            .find(|s| s["listenurl"].as_str().is_some_and(|u| u.ends_with(mount)))
    }

    pub async fn wait_source(&self, mount: &str) -> Value {
        wait_for(&format!("a source on {mount}"), START, || {
            self.source_status(mount)
        })
        .await
    }

    pub async fn admin_get(&self, path_and_query: &str) -> (u16, String) {
        let r = onda_shared::http::client()
            .get(self.url(path_and_query))
            .basic_auth(&self.admin.0, Some(&self.admin.1))
            .send()
            .await
            .expect("admin request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Bytes the live source has sent, from `/admin/stats` (0 when there is none).
    pub async fn bytes_read(&self) -> u64 {
        let (_, stats) = self.admin_get("/admin/stats").await;
        stats
            .split("<total_bytes_read>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The codec ffprobe finds on `mount`, or its error output.
    pub async fn probe_codec(&self, mount: &str) -> String {
        let url = self.url(mount);
        let mut p = Proc::external(
            "ffprobe",
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
                &url,
            ],
        );
        let status = p.wait_exit(START).await;
        if status.success() {
            p.stdout().trim().to_string()
        } else {
            format!("ffprobe failed: {}", p.stderr())
        }
    }

    /// The value of a metric line such as `onda_edge_listeners{mount="/live"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = onda_shared::http::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// ffmpeg sending a 128 kbps MP3 sine tone in real time to `url`, with extra output options.
pub fn ffmpeg_source(url: &str, freq: u32, extra: &[&str]) -> Proc {
    let input = format!("sine=frequency={freq}:sample_rate=44100");
    let mut args = vec![
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-f",
        "lavfi",
        "-i",
        &input,
        "-ac",
        "2",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-content_type",
        "audio/mpeg",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-f", "mp3", url]);
    Proc::external("ffmpeg source", "ffmpeg", &args)
}

/// ffmpeg publishing a generated H.264 + AAC test pattern in real time to `url` over RTMP
/// (FLV), with a keyframe every `gop` frames at 25 fps.
pub fn ffmpeg_rtmp(url: &str, gop: u32) -> Proc {
    let gop = gop.to_string();
    Proc::external(
        "ffmpeg rtmp publisher",
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
            "-g",
            &gop,
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-f",
            "flv",
            url,
        ],
    )
}

/// What a raw listener has heard so far.
#[derive(Debug, Default, Clone)]
pub struct Heard {
    pub head: String,
    pub audio_bytes: u64,
    pub titles: Vec<String>,
    pub closed: bool,
}

/// A listener on a raw socket that records audio bytes and ICY titles until dropped.
pub struct RawListener {
    pub heard: Arc<Mutex<Heard>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawListener {
    pub async fn connect(addr: &str, mount: &str, icy: bool) -> RawListener {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET {mount} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: onda-test\r\n{}\r\n",
            if icy { "Icy-MetaData: 1\r\n" } else { "" }
        );
        stream
            .write_all(req.as_bytes())
            .await
            .expect("send request");
        let heard = Arc::new(Mutex::new(Heard::default()));
        let h = heard.clone();
        let task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            // The head.
            let body_start = loop {
                let Ok(n) = stream.read(&mut chunk).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(body_start) = body_start else {
                let mut g = h.lock().expect("lock");
                g.head = String::from_utf8_lossy(&buf).to_string();
                g.closed = true;
                return;
            };
            let head = String::from_utf8_lossy(&buf[..body_start]).to_string();
            let metaint = head
                .lines()
                .find_map(|l| l.strip_prefix("icy-metaint:"))
                .and_then(|v| v.trim().parse().ok());
            h.lock().expect("lock").head = head;
            let mut de = metaint.map(Deinterleaver::new);
            let mut feed = |data: &[u8]| {
                let mut g = h.lock().expect("lock");
                match &mut de {
                    Some(de) => {
                        let (mut audio, mut titles) = (Vec::new(), Vec::new());
                        de.feed(&Bytes::copy_from_slice(data), &mut audio, &mut titles);
                        g.audio_bytes += audio.iter().map(|a| a.len() as u64).sum::<u64>();
                        g.titles
                            .extend(titles.iter().filter_map(|t| stream_title(t)));
                    }
                    None => g.audio_bytes += data.len() as u64,
                }
            };
            feed(&buf[body_start..]);
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => feed(&chunk[..n]),
                }
            }
            h.lock().expect("lock").closed = true;
        });
        RawListener { heard, task }
    }

    pub fn heard(&self) -> Heard {
        self.heard.lock().expect("lock").clone()
    }

    /// Waits until the listener has heard `title`.
    pub async fn wait_title(&self, title: &str) {
        wait_for(&format!("title {title:?}"), START, || {
            let h = self.heard();
            async move { h.titles.iter().any(|t| t == title).then_some(()) }
        })
        .await;
    }

    /// Waits until at least `n` more audio bytes arrived.
    pub async fn wait_more_audio(&self, n: u64) {
        let start = self.heard().audio_bytes;
        self.wait_audio_total(start + n).await;
    }

    /// Waits until `total` audio bytes arrived in all (fails if the listener is disconnected
    /// before).
    pub async fn wait_audio_total(&self, total: u64) {
        wait_for(&format!("{total} audio bytes in all"), START, || {
            let h = self.heard();
            async move {
                if h.audio_bytes >= total {
                    return Some(());
                }
                assert!(!h.closed, "the listener was disconnected: {h:?}");
                None
            }
        })
        .await;
    }
}

impl Drop for RawListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tagged track named `file`, its extension choosing the format (`mp3`, `m4a` or `flac`):
/// [`crate::media::make_track`] with the names the edge tests use.
pub async fn make_track(
    dir: &std::path::Path,
    file: &str,
    freq: u32,
    secs: u32,
    artist: &str,
    title: &str,
) -> std::path::PathBuf {
    use crate::media::{Kind, Tags};
    let (name, ext) = file
        .rsplit_once('.')
        .expect("a file name with an extension");
    let kind = match ext {
        "mp3" => Kind::Mp3,
        "m4a" => Kind::M4a,
        "flac" => Kind::Flac,
        other => panic!("the tests make no .{other} files"),
    };
    let tags = Tags {
        artist,
        title,
        album: "",
    };
    crate::media::make_track(dir, name, kind, f64::from(secs), freq, &tags).await
}

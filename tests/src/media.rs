//! Helpers for media tests: real audio files and images made by the system ffmpeg, uploads of
//! raw bytes (also chunked, with no length announced), and a look at what the media store holds
//! on disk.

use crate::api::{Reply, TestControlPlane};
use reqwest::Method;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Containers and codecs the tests make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MP3 (LAME, 128 kbps CBR, with a Xing/Info header and ID3v2 tags).
    Mp3,
    /// AAC in an M4A (MP4) container.
    M4a,
    /// FLAC with Vorbis comments.
    Flac,
    /// Ogg Vorbis (96 kbps) with Vorbis comments.
    Ogg,
}

impl Kind {
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Mp3 => "mp3",
            Kind::M4a => "m4a",
            Kind::Flac => "flac",
            Kind::Ogg => "ogg",
        }
    }

    pub fn codec(self) -> &'static str {
        match self {
            Kind::Mp3 => "mp3",
            Kind::M4a => "aac",
            Kind::Flac => "flac",
            Kind::Ogg => "vorbis",
        }
    }
}

/// A track's tags.
#[derive(Debug, Clone)]
pub struct Tags<'a> {
    pub artist: &'a str,
    pub title: &'a str,
    pub album: &'a str,
}

/// Makes `seconds` of a sine tone at `hz` (so tracks differ in content) with the tags, in
/// `dir`, and returns its path. Panics with ffmpeg's output when ffmpeg fails.
pub async fn make_track(
    dir: &Path,
    name: &str,
    kind: Kind,
    seconds: f64,
    hz: u32,
    tags: &Tags<'_>,
) -> PathBuf {
    let path = dir.join(format!("{name}.{}", kind.extension()));
    let codec: &[&str] = match kind {
        Kind::Mp3 => &["-c:a", "libmp3lame", "-b:a", "128k"],
        Kind::M4a => &["-c:a", "aac", "-b:a", "96k"],
        Kind::Flac => &["-c:a", "flac"],
        Kind::Ogg => &["-c:a", "libvorbis", "-b:a", "96k"],
    };
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
        ])
        .arg("-i")
        .arg(format!(
            "sine=frequency={hz}:sample_rate=44100:duration={seconds}"
        ))
        .args(codec)
        .arg("-metadata")
        .arg(format!("artist={}", tags.artist))
        .arg("-metadata")
        .arg(format!("title={}", tags.title))
        .arg("-metadata")
        .arg(format!("album={}", tags.album))
        .arg(&path)
        .output()
        .await
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg failed to make {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Runs `ffmpeg -nostdin -hide_banner -v error -y ARGS`; panics with its output, naming
/// `what`, when it fails.
async fn ffmpeg(what: &str, args: &[&std::ffi::OsStr]) {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(args)
        .output()
        .await
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg failed to {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `width` × `height` PNG of ffmpeg's test pattern in `dir` (a real image: it decodes).
pub async fn make_png(dir: &Path, name: &str, width: u32, height: u32) -> PathBuf {
    let path = dir.join(format!("{name}.png"));
    let source = format!("testsrc=size={width}x{height}:rate=1");
    let args = ["-f", "lavfi", "-i", &source, "-frames:v", "1"].map(std::ffi::OsStr::new);
    ffmpeg(
        &format!("make {name}"),
        &[&args[..], &[path.as_os_str()]].concat(),
    )
    .await;
    path
}

/// A copy of the audio file `track` with the picture `cover` embedded as its cover (an ID3
/// APIC frame in an MP3, a picture block in a FLAC), named `name` in the same directory.
pub async fn with_cover(track: &Path, cover: &Path, name: &str) -> PathBuf {
    let path = track.with_file_name(name);
    let o = std::ffi::OsStr::new;
    let args = [
        o("-i"),
        track.as_os_str(),
        o("-i"),
        cover.as_os_str(),
        o("-map"),
        o("0:a"),
        o("-map"),
        o("1:v"),
        o("-c:a"),
        o("copy"),
        o("-disposition:v"),
        o("attached_pic"),
        path.as_os_str(),
    ];
    ffmpeg(&format!("embed a cover in {name}"), &args).await;
    path
}

/// `seconds` of ffmpeg's test pattern at `width` × `height`, 10 frames a second, as MPEG-4
/// video in an MP4 file in `dir` (ffmpeg's own encoder, in every build).
pub async fn make_video(dir: &Path, name: &str, width: u32, height: u32, seconds: u32) -> PathBuf {
    let path = dir.join(format!("{name}.mp4"));
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
        ])
        .arg("-i")
        .arg(format!("testsrc=size={width}x{height}:rate=10"))
        .arg("-t")
        .arg(seconds.to_string())
        .args(["-c:v", "mpeg4", "-f", "mp4"])
        .arg(&path)
        .output()
        .await
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg failed to make {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Every file under `dir` (recursively), sorted; directories are not listed.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Where the store keeps the content with this SHA-256.
pub fn blob_path(media_dir: &Path, sha256: &str) -> PathBuf {
    media_dir.join(&sha256[..2]).join(sha256)
}

/// `POST /v1/stations/{station}/media?filename=…` with `bytes` as the body (Content-Length set).
pub async fn upload(
    cp: &TestControlPlane,
    token: &str,
    station: &str,
    filename: &str,
    bytes: Vec<u8>,
) -> Reply {
    let query: String = form_urlencoded(filename);
    cp.raw(
        Method::POST,
        &format!("/v1/stations/{station}/media?filename={query}"),
        token,
        Some("application/octet-stream"),
        bytes,
    )
    .await
}

/// Uploads `bytes` with `Transfer-Encoding: chunked` over a raw connection, so the server cannot
/// know the size in advance and must stop the upload while it streams. Returns the status and
/// the body of the answer.
pub async fn upload_chunked(
    cp: &TestControlPlane,
    token: &str,
    station: &str,
    filename: &str,
    bytes: &[u8],
) -> (u16, String) {
    let path = format!(
        "/v1/stations/{station}/media?filename={}",
        form_urlencoded(filename)
    );
    post_chunked(cp, &path, token, "audio/mpeg", bytes).await
}

/// POSTs `bytes` to `path` with `Transfer-Encoding: chunked` (see [`upload_chunked`]).
pub async fn post_chunked(
    cp: &TestControlPlane,
    path: &str,
    token: &str,
    content_type: &str,
    bytes: &[u8],
) -> (u16, String) {
    let addr = cp.url.trim_start_matches("http://").to_string();
    let s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut r, mut w) = s.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    w.write_all(head.as_bytes()).await.expect("write head");
    let bytes = bytes.to_vec();
    // Written beside the reader: the server may answer and close before the end, and the answer
    // must be read as it comes (later writes then fail, which is the point). The task hands the
    // write half back instead of dropping it: dropping it would half-close the connection, and
    // the server takes that for a client that left.
    let writer = tokio::spawn(async move {
        for chunk in bytes.chunks(16 * 1024) {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(chunk);
            frame.extend_from_slice(b"\r\n");
            if w.write_all(&frame).await.is_err() {
                return w;
            }
        }
        let _ = w.write_all(b"0\r\n\r\n").await;
        w
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    // Bounded: a writer still blocked after the answer would mean the server neither read nor
    // closed, and the caller's assertions say more than a hang.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), writer).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Percent-encodes a query value (letters, digits and `-._~` stay).
fn form_urlencoded(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `minutes` of silent mono Opus at 6 kbps in `dir`, made in about a second whatever its
/// length: one minute is encoded, then its packets are copied `minutes` times. `declared`: an
/// Ogg file, whose length ffprobe reads from its last page; otherwise Matroska written as a
/// stream (`pipe:`), which declares no length at all, so only decoding can tell. Panics with
/// ffmpeg's output when ffmpeg fails.
pub async fn make_silence(dir: &Path, name: &str, minutes: u32, declared: bool) -> PathBuf {
    let minute = dir.join(format!("{name}-minute.opus"));
    let ffmpeg = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .output()
            .await
            .expect("ffmpeg runs");
        assert!(
            out.status.success(),
            "ffmpeg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut args = s(&["-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "60"]);
    args.extend(s(&["-c:a", "libopus", "-b:a", "6k"]));
    args.push(minute.display().to_string());
    ffmpeg(args).await;
    let loops = minutes.saturating_sub(1).to_string();
    let mut args = s(&["-stream_loop", &loops, "-i"]);
    args.push(minute.display().to_string());
    args.extend(s(&["-c", "copy"]));
    let path = if declared {
        let path = dir.join(format!("{name}.opus"));
        args.push(path.display().to_string());
        ffmpeg(args).await;
        path
    } else {
        let path = dir.join(format!("{name}.mka"));
        args.extend(s(&["-f", "matroska", "pipe:1"]));
        std::fs::write(&path, ffmpeg(args).await).expect("write the stream");
        path
    };
    let _ = std::fs::remove_file(&minute);
    path
}

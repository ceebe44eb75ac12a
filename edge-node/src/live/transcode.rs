//! Renditions of a live stream (an ABR ladder): while a stream with renditions is published,
//! one ffmpeg reads the publisher's FLV tags on its stdin and encodes every rung, publishing
//! each back into this node over RTMP on loopback with a key derived from the stream's key.
//! Each rendition is then a live stream of its own here (segments, parts, playlists), served
//! under its parent's name and admission, and the master playlist lists them.
//!
//! The FLV written to ffmpeg is done by hand: a 13-byte file header and an 11-byte header per
//! tag around the bodies RTMP already carries, smaller than any crate for it.

use crate::config::RenditionConfig;
use bytes::Bytes;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Tags queued for ffmpeg (about 15 s at 30 fps with audio) before they are dropped.
const QUEUE: usize = 1024;

/// The key a rendition publishes back with, from the stream key and a nonce of the publish
/// (`seed`): valid for that publish only.
pub fn rendition_key(seed: &str, rendition: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(
        format!("onda-live-rendition\0{seed}\0{rendition}").as_bytes(),
    ))
}

/// A random key nobody holds (a rendition between publishes, a publish's nonce).
pub fn unusable_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

struct Tag {
    video: bool,
    ms: u32,
    data: Bytes,
}

/// A running ffmpeg for one publish; dropping it closes ffmpeg's input, and ffmpeg ends its
/// renditions' publishes and exits (or is killed after a grace period).
pub struct Transcoder {
    tx: Option<SyncSender<Tag>>,
    /// Tags are being dropped (ffmpeg fell behind): video resumes at the next keyframe, so the
    /// renditions never decode from a picture whose references are missing.
    dropping: bool,
    stream: String,
    child: std::sync::Arc<std::sync::Mutex<ffmpeg_sidecar::child::FfmpegChild>>,
}

/// The FLV file header (audio and video) and the first PreviousTagSize.
fn flv_header() -> [u8; 13] {
    [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
}

fn flv_tag(out: &mut Vec<u8>, video: bool, ms: u32, data: &[u8]) {
    let len = data.len().min(0xff_ffff) as u32;
    out.push(if video { 9 } else { 8 });
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&ms.to_be_bytes()[1..]);
    out.push((ms >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&data[..len as usize]);
    out.extend_from_slice(&(11 + len).to_be_bytes());
}

/// ffmpeg's arguments: FLV on stdin, one H.264 encode per rendition (keyframes where the
/// source has them, so segments line up across the ladder), audio copied.
fn args(ingest: SocketAddr, rungs: &[(RenditionConfig, String)]) -> Vec<String> {
    let mut a: Vec<String> = [
        "-loglevel",
        "error",
        "-nostats",
        "-fflags",
        "nobuffer",
        "-analyzeduration",
        "500000",
        "-f",
        "flv",
        "-i",
        "pipe:0",
    ]
    .map(String::from)
    .to_vec();
    for (r, key) in rungs {
        let k = r.video_kbps;
        a.extend(
            [
                "-map",
                "0:v:0",
                "-map",
                "0:a:0?",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-b:v",
                &format!("{k}k"),
                "-maxrate",
                &format!("{k}k"),
                "-bufsize",
                &format!("{}k", 2 * k),
                "-vf",
                &format!("scale=-2:{}", r.height),
                // Keyframes where the source has them and nowhere else.
                "-force_key_frames",
                "source",
                "-g",
                "100000",
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "copy",
                "-f",
                "flv",
                &format!("rtmp://{ingest}/live/{key}"),
            ]
            .map(String::from),
        );
    }
    a
}

impl Transcoder {
    /// Starts ffmpeg for `stream`, publishing each rung with its key to the node's RTMP
    /// ingest at `ingest`.
    pub fn start(
        stream: &str,
        ingest: SocketAddr,
        rungs: &[(RenditionConfig, String)],
    ) -> anyhow::Result<Transcoder> {
        let mut cmd = ffmpeg_sidecar::command::FfmpegCommand::new_with_path("ffmpeg");
        cmd.hide_banner().args(args(ingest, rungs));
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!("cannot start ffmpeg for the renditions (is it installed?): {e}")
        })?;
        let stdin = child
            .take_stdin()
            .ok_or_else(|| anyhow::anyhow!("ffmpeg has no stdin"))?;
        let stderr = child.take_stderr();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Tag>(QUEUE);
        let name = stream.to_string();
        if let Some(stderr) = stderr {
            let name = name.clone();
            std::thread::spawn(move || {
                // With -loglevel error everything ffmpeg says is an error worth a line; the
                // pipe is read to the end (a closed one would kill ffmpeg with SIGPIPE), the
                // log holds the first 50.
                for (n, line) in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                    .enumerate()
                {
                    if n < 50 {
                        tracing::warn!(stream = %name, "renditions ffmpeg: {line}");
                    }
                }
            });
        }
        std::thread::Builder::new()
            .name(format!("renditions-{name}"))
            .spawn(move || {
                let mut stdin = std::io::BufWriter::new(stdin);
                let mut ok = stdin.write_all(&flv_header()).is_ok();
                let mut buf = Vec::with_capacity(64 * 1024);
                while ok && let Ok(tag) = rx.recv() {
                    buf.clear();
                    flv_tag(&mut buf, tag.video, tag.ms, &tag.data);
                    // Flushed per tag: ffmpeg should see each frame as soon as it came.
                    ok = stdin.write_all(&buf).and_then(|()| stdin.flush()).is_ok();
                }
                // Dropping stdin ends ffmpeg's input; the Transcoder's drop reaps it.
            })?;
        Ok(Transcoder {
            tx: Some(tx),
            dropping: false,
            stream: stream.to_string(),
            child: std::sync::Arc::new(std::sync::Mutex::new(child)),
        })
    }

    /// Passes one of the publisher's tags on; when ffmpeg falls behind by a whole queue the
    /// tag is dropped (and the renditions glitch) rather than slowing the source down.
    pub fn send(&mut self, video: bool, ms: u32, data: &Bytes) {
        let Some(tx) = &self.tx else { return };
        // FLV video: frame type 1 (keyframe) in the high nibble; AVC sequence headers too.
        let keyframe = video && data.first().is_some_and(|b| b >> 4 == 1);
        if self.dropping && video && !keyframe {
            return;
        }
        let tag = Tag {
            video,
            ms,
            data: data.clone(),
        };
        match tx.try_send(tag) {
            Ok(()) => {
                if self.dropping && keyframe {
                    tracing::info!(stream = %self.stream, "renditions caught up");
                    self.dropping = false;
                }
            }
            Err(TrySendError::Full(_)) => {
                if !self.dropping {
                    tracing::warn!(stream = %self.stream, "renditions fall behind: dropping input until the next keyframe");
                    self.dropping = true;
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        // ffmpeg's input ends with the queue; it then ends its outputs and exits. One that
        // does not within 5 s (an output stalled, the writer blocked on a full pipe) is killed.
        self.tx = None;
        let child = self.child.clone();
        let stream = self.stream.clone();
        let _ = std::thread::Builder::new()
            .name(format!("renditions-reap-{stream}"))
            .spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let mut c = crate::mount::lock(&child);
                    match c.as_inner_mut().try_wait() {
                        Ok(Some(_)) | Err(_) => return,
                        Ok(None) if Instant::now() >= deadline => {
                            tracing::warn!(%stream, "renditions ffmpeg did not end: killed");
                            let _ = c.kill();
                            let _ = c.wait();
                            return;
                        }
                        Ok(None) => {}
                    }
                    drop(c);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flv_tags_have_their_sizes_and_extended_timestamps() {
        let mut out = Vec::new();
        flv_tag(&mut out, true, 0x0102_0304, &[0x17, 1, 2]);
        assert_eq!(
            out,
            [
                9, 0, 0, 3, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 0x17, 1, 2, 0, 0, 0, 14
            ]
        );
        assert_eq!(&flv_header()[..5], b"FLV\x01\x05");
    }

    #[test]
    fn rendition_keys_differ_by_rendition_and_stream_key() {
        let a = rendition_key("key-1", "480p");
        assert_ne!(a, rendition_key("key-1", "360p"));
        assert_ne!(a, rendition_key("key-2", "480p"));
        assert_eq!(a.len(), 64);
        assert_ne!(unusable_key(), unusable_key());
        let args = args(
            "127.0.0.1:1935".parse().expect("addr"),
            &[(
                RenditionConfig {
                    name: "480p".into(),
                    height: 480,
                    video_kbps: 1200,
                },
                a.clone(),
            )],
        );
        assert!(args.contains(&"scale=-2:480".to_string()));
        assert!(args.contains(&format!("rtmp://127.0.0.1:1935/live/{a}")));
    }
}

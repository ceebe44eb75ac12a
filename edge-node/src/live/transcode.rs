//! Renditions of a live stream (an ABR ladder): while a stream with renditions is published,
//! one ffmpeg reads the publisher's FLV tags on its stdin and encodes every rung, writing each
//! as FLV into a FIFO of its own in a private (0700) temporary directory, which this node reads
//! back ([`read_tag`]) into the rendition's live stream. No key or URL of the node is on
//! ffmpeg's command line (which every local user can read in /proc), and nothing but this
//! ffmpeg can feed a rendition. Each rendition is then a live stream of its own here (segments,
//! parts, playlists), served under its parent's name and admission, and the master playlist
//! lists them.
//!
//! The FLV written to ffmpeg and read back is done by hand: a 13-byte file header and an
//! 11-byte header per tag around the bodies RTMP already carries, smaller than any crate for it.

use super::flv::TagKind;
use crate::config::RenditionConfig;
use bytes::Bytes;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;

/// Tags queued for ffmpeg (about 15 s at 30 fps with audio) before they are dropped.
const QUEUE: usize = 1024;

/// A random key nobody holds (a rendition's stream between publishes, and the key its
/// publish claims it with inside the node).
pub(crate) fn unusable_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

struct Tag {
    kind: TagKind,
    ms: u32,
    data: Bytes,
}

/// A running ffmpeg for one publish; dropping it closes ffmpeg's input, and ffmpeg ends its
/// renditions' publishes and exits (or is killed after a grace period).
pub(crate) struct Transcoder {
    tx: Option<SyncSender<Tag>>,
    /// Tags are being dropped (ffmpeg fell behind): video resumes at the next keyframe, so the
    /// renditions never decode from a picture whose references are missing.
    dropping: bool,
    stream: String,
    child: std::sync::Arc<std::sync::Mutex<ffmpeg_sidecar::child::FfmpegChild>>,
    /// The FIFOs' directory, removed with the transcoder.
    _fifos: tempfile::TempDir,
}

/// The FLV file header (audio and video) and the first PreviousTagSize.
fn flv_header() -> [u8; 13] {
    [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
}

fn flv_tag(out: &mut Vec<u8>, kind: TagKind, ms: u32, data: &[u8]) {
    let len = data.len().min(0xff_ffff) as u32;
    out.push(kind.flv_type());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&ms.to_be_bytes()[1..]);
    out.push((ms >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&data[..len as usize]);
    out.extend_from_slice(&(11 + len).to_be_bytes());
}

/// One FLV tag read back from ffmpeg: video (or audio), its timestamp and body.
pub(crate) struct FlvTag {
    pub kind: TagKind,
    pub ms: u32,
    pub body: Bytes,
}

/// Reads ffmpeg's FLV file header (checked) from a rendition's FIFO.
pub(crate) async fn read_header(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<()> {
    let mut head = [0u8; 13];
    r.read_exact(&mut head).await?;
    if &head[..3] != b"FLV" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "ffmpeg did not write FLV",
        ));
    }
    // A longer header (DataOffset beyond 9) is skipped.
    let offset = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    let mut skip = vec![0u8; offset.saturating_sub(9).min(1024) as usize];
    r.read_exact(&mut skip).await?;
    Ok(())
}

/// Reads the next audio or video tag (script tags are skipped) after [`read_header`].
pub(crate) async fn read_tag(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<FlvTag> {
    loop {
        let mut h = [0u8; 11];
        r.read_exact(&mut h).await?;
        let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        // The body and the PreviousTagSize after it.
        let mut body = vec![0u8; len + 4];
        r.read_exact(&mut body).await?;
        body.truncate(len);
        match h[0] & 0x1f {
            8 => {
                return Ok(FlvTag {
                    kind: TagKind::Audio,
                    ms,
                    body: body.into(),
                });
            }
            9 => {
                return Ok(FlvTag {
                    kind: TagKind::Video,
                    ms,
                    body: body.into(),
                });
            }
            _ => {}
        }
    }
}

/// One rung's FLV as ffmpeg writes it into the rung's FIFO.
pub(crate) struct Output {
    path: PathBuf,
    reader: pipe::Receiver,
}

impl Output {
    /// Makes a FIFO at `path` (owner only) and opens its reading end. It is opened read-write
    /// first so it neither waits for ffmpeg nor sees an end before ffmpeg has opened it.
    fn fifo(path: PathBuf) -> std::io::Result<Output> {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        mknodat(CWD, &path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)?;
        let reader = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)?;
        Ok(Output { path, reader })
    }

    /// Reads ffmpeg's FLV header ([`read_header`]). ffmpeg holds the FIFO open for writing from
    /// then on, so it is read through a read-only descriptor: ffmpeg's exit, a crash too, ends
    /// the reading (an end of file) instead of leaving it waiting forever.
    pub(crate) async fn header(&mut self) -> std::io::Result<()> {
        read_header(&mut self.reader).await?;
        // Opened before the read-write one is closed, so what ffmpeg wrote stays in the pipe.
        self.reader = pipe::OpenOptions::new().open_receiver(&self.path)?;
        Ok(())
    }

    /// The next tag ([`read_tag`]), after [`Output::header`].
    pub(crate) async fn tag(&mut self) -> std::io::Result<FlvTag> {
        read_tag(&mut self.reader).await
    }
}

/// ffmpeg's arguments: FLV on stdin, one H.264 encode per rendition (keyframes where the
/// source has them, so segments line up across the ladder), audio copied, each rendition
/// written as FLV to its FIFO in `outputs`.
fn args(rungs: &[RenditionConfig], outputs: &[PathBuf]) -> Vec<String> {
    let mut a: Vec<String> = [
        "-y",
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
    for (r, out) in rungs.iter().zip(outputs) {
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
                // A FIFO cannot be rewritten at the end.
                "-flvflags",
                "no_duration_filesize",
                &out.display().to_string(),
            ]
            .map(String::from),
        );
    }
    a
}

impl Transcoder {
    /// Starts ffmpeg for `stream`, making each rung; returns it and the reading end of each
    /// rung's FLV, in the order of `rungs`.
    pub(crate) fn start(
        stream: &str,
        rungs: &[RenditionConfig],
    ) -> anyhow::Result<(Transcoder, Vec<Output>)> {
        // tempfile makes the directory with mode 0700.
        let fifos = tempfile::Builder::new()
            .prefix("onda-renditions-")
            .tempdir()
            .map_err(|e| anyhow::anyhow!("cannot make a directory for the renditions: {e}"))?;
        let outputs: Vec<PathBuf> = (0..rungs.len())
            .map(|i| fifos.path().join(format!("{i}.flv")))
            .collect();
        let readers = outputs
            .iter()
            .map(|p| Output::fifo(p.clone()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| anyhow::anyhow!("cannot make the renditions' FIFOs: {e}"))?;
        let mut cmd = ffmpeg_sidecar::command::FfmpegCommand::new_with_path("ffmpeg");
        cmd.hide_banner().args(args(rungs, &outputs));
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
                    flv_tag(&mut buf, tag.kind, tag.ms, &tag.data);
                    // Flushed per tag: ffmpeg should see each frame as soon as it came.
                    ok = stdin.write_all(&buf).and_then(|()| stdin.flush()).is_ok();
                }
                // Dropping stdin ends ffmpeg's input; the Transcoder's drop reaps it.
            })?;
        let t = Transcoder {
            tx: Some(tx),
            dropping: false,
            stream: stream.to_string(),
            child: std::sync::Arc::new(std::sync::Mutex::new(child)),
            _fifos: fifos,
        };
        Ok((t, readers))
    }

    /// Passes one of the publisher's tags on; when ffmpeg falls behind by a whole queue the
    /// tag is dropped (and the renditions glitch) rather than slowing the source down.
    pub(crate) fn send(&mut self, kind: TagKind, ms: u32, data: &Bytes) {
        let Some(tx) = &self.tx else { return };
        let video = kind == TagKind::Video;
        // FLV video: frame type 1 (keyframe) in the high nibble; AVC sequence headers too.
        let keyframe = video && data.first().is_some_and(|b| b >> 4 == 1);
        if self.dropping && video && !keyframe {
            return;
        }
        let tag = Tag {
            kind,
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
                    let mut c = crate::sync::lock(&child);
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
        flv_tag(&mut out, TagKind::Video, 0x0102_0304, &[0x17, 1, 2]);
        assert_eq!(
            out,
            [
                9, 0, 0, 3, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 0x17, 1, 2, 0, 0, 0, 14
            ]
        );
        assert_eq!(&flv_header()[..5], b"FLV\x01\x05");
    }

    #[test]
    fn arguments_name_fifos_and_no_url() {
        assert_ne!(unusable_key(), unusable_key());
        let args = args(
            &[RenditionConfig {
                name: "480p".into(),
                height: 480,
                video_kbps: 1200,
            }],
            &[PathBuf::from("/tmp/onda-renditions-x/0.flv")],
        );
        assert!(args.contains(&"scale=-2:480".to_string()));
        assert!(args.contains(&"/tmp/onda-renditions-x/0.flv".to_string()));
        assert!(!args.iter().any(|a| a.contains("rtmp://")), "{args:?}");
    }

    #[tokio::test]
    async fn flv_written_is_read_back() {
        let mut file = flv_header().to_vec();
        // A script tag first, as ffmpeg writes onMetaData.
        file.extend_from_slice(&[18, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 13]);
        flv_tag(&mut file, TagKind::Video, 0x0102_0304, &[0x17, 1, 2]);
        flv_tag(&mut file, TagKind::Audio, 40, &[0xaf, 1]);
        let mut r = &file[..];
        read_header(&mut r).await.expect("header");
        let v = read_tag(&mut r).await.expect("video");
        assert!(v.kind == TagKind::Video && v.ms == 0x0102_0304 && v.body[..] == [0x17, 1, 2]);
        let a = read_tag(&mut r).await.expect("audio");
        assert!(a.kind == TagKind::Audio && a.ms == 40 && a.body[..] == [0xaf, 1]);
        assert!(read_tag(&mut r).await.is_err(), "the end");
    }

    /// Once ffmpeg's header is read, ffmpeg closing its end (exiting, crashing) ends the reading.
    #[tokio::test]
    async fn a_fifo_ends_when_its_writer_closes() {
        let dir = tempfile::tempdir().expect("dir");
        let mut out = Output::fifo(dir.path().join("0.flv")).expect("fifo");
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("0.flv"))
            .expect("writer");
        let mut file = flv_header().to_vec();
        flv_tag(&mut file, TagKind::Video, 7, &[0x17, 1]);
        w.write_all(&file).expect("write");
        out.header().await.expect("header");
        drop(w);
        let wait = Duration::from_secs(30);
        let tag = tokio::time::timeout(wait, out.tag())
            .await
            .expect("no wait");
        assert!(tag.expect("what was written stays").ms == 7);
        let end = tokio::time::timeout(wait, out.tag()).await;
        assert!(end.expect("an end, not a wait").is_err());
    }
}

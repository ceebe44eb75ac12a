//! Live takeover: while a DJ's source client is on the station's live mount, the AutoDJ's
//! outputs carry the live show instead of the playlist. An output whose format and bitrate match
//! the DJ's stream gets the bytes as they are; any other gets them through one ffmpeg per output
//! (decode + encode is unavoidable there). The outputs' sessions never change, so listeners stay
//! connected when the DJ arrives and when the DJ leaves.
//!
//! Live conversion uses tokio's process API rather than ffmpeg-sidecar: the sidecar is
//! synchronous, and a live pipe needs asynchronous stdin and stdout.

use super::{Output, Session};
use crate::config::AutoDjConfig;
use crate::mount::Read;
use crate::registry::Feeds;
use bytes::{Bytes, BytesMut};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The DJ's session when one is on the live mount and has sent audio.
pub(crate) fn on_air(feeds: &Feeds, cfg: &AutoDjConfig) -> Option<Arc<Session>> {
    let mount = feeds.mount(cfg.live_mount.as_deref()?)?;
    mount
        .session()
        .filter(|s| !s.is_closed() && s.published() > 0)
}

/// Carries the live session on every output until the DJ leaves (or `stop`).
pub(super) async fn play(
    outputs: &mut [Output],
    live: Arc<Session>,
    clock: Instant,
    stop: &CancellationToken,
    now: &std::sync::Mutex<Option<super::NowPlaying>>,
) {
    let started_at = std::time::SystemTime::now();
    let show = |title: &str| super::NowPlaying {
        title: title.to_string(),
        artist: String::new(),
        track_title: title.to_string(),
        file: std::path::PathBuf::new(),
        sha256: None,
        started_at,
        duration: None,
        live: true,
        streamer: live.info.user.clone(),
        next: None,
        request_id: None,
        next_request_id: None,
    };
    super::set_now(now, show(&live.metadata().title));
    let live_format = format_of(&live.info.content_type);
    tracing::info!(
        "live DJ on the air ({}, {} kbps)",
        live.info.content_type,
        live.info.bitrate
    );
    let mut feeds: Vec<Feed> = outputs
        .iter()
        .map(|o| {
            let same = live_format == Some(o.cfg.format.as_str())
                && live.info.bitrate == o.cfg.bitrate_kbps;
            if same {
                let parse = crate::frames::parser_for(&o.session.info.content_type)
                    .unwrap_or(crate::frames::mpeg);
                Feed::Direct(o.session.clone(), crate::frames::Framer::new(parse))
            } else {
                Feed::convert(live_format, o)
            }
        })
        .collect();
    let mut pos = live.published();
    let mut title_version = 0;
    loop {
        let meta = live.metadata();
        if meta.version != title_version && !meta.title.is_empty() {
            title_version = meta.version;
            for o in outputs.iter() {
                o.session.set_title(&meta.title, &meta.url);
            }
            super::set_now(now, show(&meta.title));
        }
        match live.read(&mut pos) {
            Read::Data(chunks) => {
                for feed in &mut feeds {
                    feed.send(&chunks);
                }
            }
            Read::Lagged => {
                pos = live.published();
                for feed in &mut feeds {
                    feed.resync();
                }
            }
            Read::Ended => break,
            Read::Pending => {
                tokio::select! {
                    () = live.wait(pos) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    tracing::info!("live DJ left; the AutoDJ resumes");
    // What ffmpeg still holds is flushed, briefly: the AutoDJ must be back within a second.
    let deadline = Instant::now() + Duration::from_millis(300);
    for feed in feeds {
        feed.finish(deadline).await;
    }
    let now = clock.elapsed();
    for o in outputs.iter_mut() {
        o.sent = o.sent.max(now);
    }
}

/// The AutoDJ's output format name for a source's content type.
fn format_of(content_type: &str) -> Option<&'static str> {
    let ct = content_type.to_ascii_lowercase();
    if ct.contains("mpeg") || ct.contains("mp3") {
        Some("mp3")
    } else if ct.contains("aac") {
        Some("aac")
    } else if ct.contains("ogg") {
        Some("ogg")
    } else {
        None
    }
}

enum Feed {
    /// Same format and bitrate: the DJ's frames as they are. The show is read from wherever the
    /// DJ's stream is when it comes on (mid-frame, as a rule) and ends wherever the DJ's last
    /// write did, so only whole frames go out: the AutoDJ's last frame before the show and its
    /// first after it are followed and preceded by whole frames.
    Direct(Arc<Session>, crate::frames::Framer),
    /// Through ffmpeg; `None` once ffmpeg could not start (the output then stays quiet while the
    /// DJ is on, and says why once).
    Convert(Option<Converter>),
}

/// One ffmpeg encoding whatever is written to it into an output's format and bitrate, its
/// output pushed to the output's session as it comes (used for live shows and crossfades).
pub(super) struct Converter {
    pub(super) input: mpsc::Sender<Bytes>,
    child: tokio::process::Child,
    reader: tokio::task::JoinHandle<()>,
}

impl Feed {
    fn convert(input_format: Option<&str>, o: &Output) -> Feed {
        let input: Vec<&str> = input_format.map(|f| vec!["-f", f]).unwrap_or_default();
        match Converter::start(&input, o) {
            Ok(c) => Feed::Convert(Some(c)),
            Err(e) => {
                tracing::warn!(mount = %o.cfg.mount, "cannot convert the live show: {e}");
                Feed::Convert(None)
            }
        }
    }

    fn send(&mut self, chunks: &[Bytes]) {
        match self {
            Feed::Direct(session, framer) => {
                for c in chunks {
                    let frames = framer.push(c);
                    if !frames.is_empty() {
                        session.push(Bytes::from(frames));
                    }
                }
            }
            Feed::Convert(Some(c)) => {
                for chunk in chunks {
                    // A converter that cannot keep up loses audio rather than holding up the
                    // other outputs.
                    if c.input.try_send(chunk.clone()).is_err() {
                        tracing::debug!("live converter is behind; dropping a chunk");
                    }
                }
            }
            Feed::Convert(None) => {}
        }
    }

    /// The DJ's stream jumped (this reader fell behind): a partial frame is dropped.
    fn resync(&mut self) {
        if let Feed::Direct(_, framer) = self {
            framer.reset();
        }
    }

    async fn finish(self, deadline: Instant) {
        if let Feed::Convert(Some(c)) = self {
            c.finish(deadline).await;
        }
    }
}

impl Converter {
    /// Ends the input and waits (until `deadline`) for ffmpeg's last output, then stops it.
    pub(super) async fn finish(mut self, deadline: Instant) {
        drop(self.input);
        let _ = tokio::time::timeout_at(deadline, &mut self.reader).await;
        self.reader.abort();
        let _ = self.child.kill().await;
    }

    /// `input`: ffmpeg's options describing what is written (e.g. `-f s16le -ar 44100 -ac 2`).
    pub(super) fn start(input: &[&str], o: &Output) -> anyhow::Result<Converter> {
        let mut cmd = tokio::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error"])
            .args(["-fflags", "+nobuffer", "-probesize", "32768"])
            .args(["-analyzeduration", "0"])
            .args(input);
        cmd.args(["-i", "pipe:0", "-vn", "-map_metadata", "-1"])
            .args(super::render::encoder_args(
                o.cfg.format,
                o.cfg.bitrate_kbps,
            ));
        cmd.args(["-flush_packets", "1", "pipe:1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if stdin.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // Dropping stdin ends ffmpeg's input: it flushes and exits.
        });
        let session = o.session.clone();
        // Whole frames only: ffmpeg stopped at the deadline may be mid-frame, and the AutoDJ's
        // next frame must not follow half of one.
        let mut framer = crate::frames::Framer::new(super::render::parser(o.cfg.format));
        let reader = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            loop {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
                match stdout.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let frames = framer.push(&buf.split());
                        if !frames.is_empty() {
                            session.push(Bytes::from(frames));
                        }
                    }
                }
            }
        });
        Ok(Converter {
            input: tx,
            child,
            reader,
        })
    }
}

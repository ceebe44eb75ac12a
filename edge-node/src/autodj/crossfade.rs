//! Crossfade, the per-station option that costs CPU: tracks are decoded to PCM (one ffmpeg per
//! track), the end of each is mixed with the start of the next over `crossfade_ms` (linear
//! fades), and the mix is written in real time into one encoding ffmpeg per output, whose frames
//! go straight to the output's session. The encoders live as long as the AutoDJ, so listeners
//! get one continuous stream. Without crossfade the AutoDJ copies pre-encoded frames instead
//! (no decoding or encoding while playing).
//!
//! Decoding uses tokio's process API, not ffmpeg-sidecar: the sidecar is synchronous, and the
//! mixer reads the decoders' output while it paces the encoders.

use super::Output;
use super::live::Converter;
use bytes::Bytes;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const RATE: u64 = 44_100;
const CHANNELS: usize = 2;
/// PCM written per wake-up.
const CHUNK: Duration = Duration::from_millis(100);
/// How far the mix may run ahead of real time (the encoders add their own delay).
const LEAD: Duration = Duration::from_millis(300);
const PCM_INPUT: [&str; 6] = ["-f", "s16le", "-ar", "44100", "-ac", "2"];

/// The mixer of one AutoDJ: its encoders and the held-back end of the previous track.
#[derive(Default)]
pub(super) struct Mixer {
    /// By output (mount and the session it feeds).
    encoders: Vec<(String, std::sync::Arc<super::Session>, Converter)>,
    /// The last `crossfade` of the previous track, not yet played (interleaved samples).
    tail: Vec<i16>,
    /// Frames (samples per channel) written since `start`.
    written: u64,
    start: Option<Instant>,
}

/// What ended a track.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Played through (its tail is kept for the next track's fade).
    Done,
    /// A DJ came on, or the AutoDJ stops: the tail is dropped.
    Interrupted,
    /// The file could not be decoded.
    Failed(String),
}

impl Mixer {
    /// Makes sure every output has an encoder (and none is left for a removed output).
    fn sync(&mut self, outputs: &[Output]) {
        let same = |o: &Output, m: &str, s: &std::sync::Arc<super::Session>| {
            o.cfg.mount == m && std::sync::Arc::ptr_eq(&o.session, s)
        };
        // A dropped encoder's ffmpeg is killed with it (kill_on_drop).
        self.encoders
            .retain(|(m, s, _)| outputs.iter().any(|o| same(o, m, s)));
        for o in outputs {
            if self.encoders.iter().any(|(m, s, _)| same(o, m, s)) {
                continue;
            }
            match Converter::start(&PCM_INPUT, o) {
                Ok(c) => self
                    .encoders
                    .push((o.cfg.mount.clone(), o.session.clone(), c)),
                Err(e) => {
                    tracing::warn!(mount = %o.cfg.mount, "cannot start the crossfade encoder: {e}")
                }
            }
        }
    }

    /// Drops what is held back (a live show took over): the next track starts without a fade.
    pub(super) fn reset(&mut self) {
        self.tail.clear();
        self.start = None;
        self.written = 0;
    }

    /// Plays `file`, fading in over the previous track's held-back end (the outputs' title
    /// changes as the fade starts); keeps this track's last `fade` back for the next one.
    pub(super) async fn play(
        &mut self,
        outputs: &[Output],
        file: &Path,
        title: &str,
        fade: Duration,
        stop: &CancellationToken,
        live: &(dyn Fn() -> bool + Sync),
    ) -> Ended {
        self.sync(outputs);
        let fade_samples =
            usize::try_from(fade.as_millis() as u64 * RATE / 1000).unwrap_or(0) * CHANNELS;
        let mut decoder = match Decoder::start(file) {
            Ok(d) => d,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        // The new track's head, as long as the fade (or the whole track when shorter).
        let mut head = Vec::with_capacity(fade_samples);
        while head.len() < fade_samples {
            match decoder.read(fade_samples - head.len()).await {
                Some(s) if !s.is_empty() => head.extend_from_slice(&s),
                _ => break,
            }
        }
        if head.is_empty() && decoder.failed() {
            return Ended::Failed(format!("{} could not be decoded", file.display()));
        }
        let tail = std::mem::take(&mut self.tail);
        let mixed = mix(&tail, &head);
        for o in outputs {
            o.session.set_title(title, "");
        }
        if !self.write(&mixed, stop, live).await {
            self.reset();
            return Ended::Interrupted;
        }
        // The body: everything but the last `fade`, which waits for the next track.
        let mut held: Vec<i16> = Vec::with_capacity(fade_samples * 2);
        let chunk =
            usize::try_from(CHUNK.as_millis() as u64 * RATE / 1000).unwrap_or(4410) * CHANNELS;
        loop {
            let Some(s) = decoder.read(chunk).await else {
                break;
            };
            if s.is_empty() {
                break;
            }
            held.extend_from_slice(&s);
            if held.len() > fade_samples {
                let n = held.len() - fade_samples;
                let out: Vec<i16> = held.drain(..n).collect();
                if !self.write(&out, stop, live).await {
                    self.reset();
                    return Ended::Interrupted;
                }
            }
        }
        self.tail = held;
        Ended::Done
    }

    /// Writes PCM to every encoder, no more than [`LEAD`] ahead of real time; false when a DJ
    /// came on or the AutoDJ stops.
    async fn write(
        &mut self,
        pcm: &[i16],
        stop: &CancellationToken,
        live: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        let start = *self.start.get_or_insert_with(Instant::now);
        for piece in pcm.chunks(usize::try_from(RATE / 10).unwrap_or(4410) * CHANNELS) {
            if live() || stop.is_cancelled() {
                return false;
            }
            let ahead = Duration::from_nanos(self.written * 1_000_000_000 / RATE);
            let due = start + ahead;
            if due > Instant::now() + LEAD {
                tokio::select! {
                    () = tokio::time::sleep_until(due - LEAD) => {}
                    () = stop.cancelled() => return false,
                }
            }
            let bytes: Vec<u8> = piece.iter().flat_map(|s| s.to_le_bytes()).collect();
            let bytes = Bytes::from(bytes);
            for (_, _, enc) in &self.encoders {
                // Paced at real time, an encoder only falls behind when it is stuck: then it
                // loses audio rather than stopping the others.
                let _ = enc.input.try_send(bytes.clone());
            }
            self.written += (piece.len() / CHANNELS) as u64;
        }
        true
    }

    /// Stops the encoders (the AutoDJ ends).
    pub(super) async fn shutdown(self) {
        let deadline = Instant::now() + Duration::from_millis(300);
        for (_, _, c) in self.encoders {
            c.finish(deadline).await;
        }
    }
}

/// The previous track's tail fading out under the next track's head fading in, linearly over
/// the longer of the two; what only one of them covers plays as it is (faded).
pub(super) fn mix(tail: &[i16], head: &[i16]) -> Vec<i16> {
    let n = tail.len().max(head.len());
    let frames = (n / CHANNELS).max(1) as f32;
    (0..n)
        .map(|i| {
            let t = (i / CHANNELS) as f32 / frames;
            let a = f32::from(tail.get(i).copied().unwrap_or(0)) * (1.0 - t);
            let b = f32::from(head.get(i).copied().unwrap_or(0))
                * if tail.is_empty() { 1.0 } else { t };
            (a + b).clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
        })
        .collect()
}

/// One ffmpeg decoding a file to 44.1 kHz stereo s16le.
struct Decoder {
    child: tokio::process::Child,
    stdout: tokio::process::ChildStdout,
    got_any: bool,
    eof: bool,
    odd: Option<u8>,
}

impl Decoder {
    fn start(file: &Path) -> anyhow::Result<Decoder> {
        let mut child = tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
            .arg(file)
            .args(["-vn", "-f", "s16le", "-ar", "44100", "-ac", "2", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        Ok(Decoder {
            child,
            stdout,
            got_any: false,
            eof: false,
            odd: None,
        })
    }

    fn failed(&self) -> bool {
        !self.got_any
    }

    /// Up to `max` samples; `None` at the end.
    async fn read(&mut self, max: usize) -> Option<Vec<i16>> {
        if self.eof {
            return None;
        }
        let mut buf = vec![0u8; max * 2];
        let n = match self.stdout.read(&mut buf).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                let _ = self.child.kill().await;
                return None;
            }
            Ok(n) => n,
        };
        self.got_any = true;
        let mut bytes = Vec::with_capacity(n + 1);
        bytes.extend(self.odd.take());
        bytes.extend_from_slice(&buf[..n]);
        if bytes.len() % 2 == 1 {
            self.odd = bytes.pop();
        }
        Some(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::mix;

    #[test]
    fn the_tail_fades_out_as_the_head_fades_in() {
        let tail = vec![1000i16; 8];
        let head = vec![-1000i16; 8];
        let m = mix(&tail, &head);
        assert_eq!(m.len(), 8);
        // Starts as the tail, ends nearly as the head; the middle is between.
        assert_eq!(m[0], 1000);
        assert!(m[7] < -400, "{m:?}");
        assert!(m[4].abs() < 100, "{m:?}");
        // No previous track: the head as it is.
        assert_eq!(mix(&[], &head), head);
        // A short head: the rest of the tail still fades out.
        let m = mix(&tail, &[0, 0]);
        assert_eq!(m.len(), 8);
        assert!(m[6].abs() < m[0].abs());
    }
}

//! Renditions: each (file content, format, bitrate) is encoded once by the system ffmpeg
//! (through ffmpeg-sidecar, never a downloaded binary) into a bare stream of frames — MP3 without
//! ID3 or Xing headers, AAC in ADTS — and cached under its SHA-256, so the AutoDJ only copies
//! frames while it plays.

use crate::config::{AutoDjOutput, TrackConfig};
use anyhow::Context as _;
use onda_shared::domain::AudioFormat;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

/// Part of every rendition's name: renditions made with other settings are not reused.
const RENDITION_VERSION: &str = "v3";

/// At most this many ffmpeg encodes at once per edge: a node starting many stations must keep
/// CPU for the stations already playing.
const PARALLEL_ENCODES: usize = 2;

/// At most this many encodes of tracks to play at once (a node taking over stations starts one
/// per station and output); they are faster than real time, so each is followed as it grows.
const URGENT_ENCODES: usize = 8;

/// How often an encode of a track to play now is looked at until it has written something.
const FIRST_BYTES_POLL: Duration = Duration::from_millis(20);

type FileKey = (PathBuf, u64, Option<SystemTime>);

#[derive(Debug)]
pub(crate) struct Renditions {
    dir: PathBuf,
    /// Hashes of files already read, by (path, size, modification time).
    hashes: Mutex<HashMap<FileKey, String>>,
    encodes: Semaphore,
    urgent: Arc<Semaphore>,
}

impl Renditions {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Renditions {
        Renditions {
            dir: dir.into(),
            hashes: Mutex::new(HashMap::new()),
            encodes: Semaphore::new(PARALLEL_ENCODES),
            urgent: Arc::new(Semaphore::new(URGENT_ENCODES)),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the rendition of `track` for `out` is cached.
    async fn path_for(&self, track: &TrackConfig, out: &AutoDjOutput) -> anyhow::Result<PathBuf> {
        let sha = match &track.sha256 {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                h.to_ascii_lowercase()
            }
            _ => self.hash(&track.file).await?,
        };
        Ok(self.dir.join(format!(
            "{sha}-{}-{}-{RENDITION_VERSION}.{}",
            out.format,
            out.bitrate_kbps,
            out.format.as_str()
        )))
    }

    /// The rendition of `track` for `out`, made now if it is not cached yet (encodes made ahead
    /// of time wait for one of [`PARALLEL_ENCODES`]).
    pub(crate) async fn get(
        &self,
        track: &TrackConfig,
        out: &AutoDjOutput,
    ) -> anyhow::Result<PathBuf> {
        let path = self.path_for(track, out).await?;
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(path);
        }
        let _permit = self.encodes.acquire().await?;
        // Another task may have made it while this one waited.
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(path);
        }
        let tmp = self.begin(&path).await?;
        let (src, format, kbps) = (track.file.clone(), out.format, out.bitrate_kbps);
        finish(
            self.encode_to(&src, &tmp, format, kbps).await,
            &tmp,
            &path,
            &src,
        )
        .await?;
        Ok(path)
    }

    /// The rendition of `track` for `out` to play now: the cached one, else the one being
    /// written, handed over once the encoder has written something (after it measured the
    /// track's length for gapless joins, one decode of the file) and followed by the reader as
    /// it grows, instead of after the whole encode. Such encodes do not queue behind the ones
    /// made ahead of time (a listener waits for this one); at most [`URGENT_ENCODES`] run at
    /// once, and each holds its place until its encode is done.
    pub(crate) async fn start(
        self: &Arc<Self>,
        track: &TrackConfig,
        out: &AutoDjOutput,
    ) -> anyhow::Result<Rendition> {
        let path = self.path_for(track, out).await?;
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(Rendition {
                path,
                partial: None,
            });
        }
        let permit = self.urgent.clone().acquire_owned().await?;
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(Rendition {
                path,
                partial: None,
            });
        }
        let tmp = self.begin(&path).await?;
        let (me, src, format, kbps) = (
            self.clone(),
            track.file.clone(),
            out.format,
            out.bitrate_kbps,
        );
        let (tmp2, path2) = (tmp.clone(), path.clone());
        let mut encoding = tokio::spawn(async move {
            let _permit = permit;
            let encoded = me.encode_to(&src, &tmp2, format, kbps).await;
            finish(encoded, &tmp2, &path2, &src).await
        });
        // Until the encoder has written something or is done: a file it cannot play is an
        // error here, as from `get`, so the AutoDJ skips it (and backs off when none plays)
        // instead of starting an empty track.
        loop {
            tokio::select! {
                done = &mut encoding => {
                    done.context("the encoder task failed")??;
                    return Ok(Rendition { path, partial: None });
                }
                () = tokio::time::sleep(FIRST_BYTES_POLL) => {
                    let written = tokio::fs::metadata(&tmp).await.map_or(0, |m| m.len());
                    if written > 0 {
                        break;
                    }
                }
            }
        }
        // The rest of the encode goes on by itself; a failure from here on ends the track early.
        tokio::spawn(async move {
            if let Ok(Err(e)) = encoding.await {
                tracing::warn!("the track being played stops early: {e:#}");
            }
        });
        Ok(Rendition {
            path,
            partial: Some(tmp),
        })
    }

    /// A new, empty file beside `path` for an encode into it: it exists before the encoder
    /// starts, so a reader can open it at once.
    async fn begin(&self, path: &Path) -> anyhow::Result<PathBuf> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("bin");
        let tmp = path.with_extension(format!("{ext}.part-{}", rand::random::<u32>()));
        tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(tmp)
    }

    async fn encode_to(
        &self,
        src: &Path,
        tmp: &Path,
        format: AudioFormat,
        kbps: u32,
    ) -> anyhow::Result<()> {
        let (src, tmp) = (src.to_path_buf(), tmp.to_path_buf());
        tokio::task::spawn_blocking(move || encode(&src, &tmp, format, kbps))
            .await
            .context("the encoder task failed")?
    }

    async fn hash(&self, src: &Path) -> anyhow::Result<String> {
        let meta = tokio::fs::metadata(src)
            .await
            .with_context(|| format!("cannot read {}", src.display()))?;
        let key = (src.to_path_buf(), meta.len(), meta.modified().ok());
        if let Some(h) = crate::sync::lock(&self.hashes).get(&key) {
            return Ok(h.clone());
        }
        let path = src.to_path_buf();
        let h = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let mut f = std::fs::File::open(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(hex::encode(hasher.finalize()))
        })
        .await??;
        crate::sync::lock(&self.hashes).insert(key, h.clone());
        Ok(h)
    }
}

/// Stores a finished encode under its final name, or removes what a failed one left. A reader
/// following the file being written sees it end either way (see [`Rendition::partial`]).
async fn finish(
    encoded: anyhow::Result<()>,
    tmp: &Path,
    path: &Path,
    src: &Path,
) -> anyhow::Result<()> {
    if let Err(e) = encoded {
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(e);
    }
    if let Err(e) = tokio::fs::rename(tmp, path).await {
        // Removed, so a reader following it sees it end.
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(e).with_context(|| format!("cannot store {}", path.display()));
    }
    tracing::info!("rendition {} made from {}", path.display(), src.display());
    Ok(())
}

/// A rendition to read.
#[derive(Debug, Clone)]
pub(crate) struct Rendition {
    /// Where the finished rendition is (or will be) cached.
    pub(crate) path: PathBuf,
    /// The file an encoder is still writing, when it was not done yet: a reader follows it and,
    /// at its end, waits for more while it is under this name (the encoder renames it to
    /// `path` when done, or removes it when it fails). Renamed before the reader opened it,
    /// the reader opens `path`.
    pub(crate) partial: Option<PathBuf>,
}

/// The MIME type of an output format's stream.
pub(crate) fn content_type(format: AudioFormat) -> &'static str {
    match format {
        AudioFormat::Mp3 => "audio/mpeg",
        AudioFormat::Aac => "audio/aac",
        AudioFormat::Opus => "audio/ogg",
    }
}

/// The frames an output format's stream is cut into.
pub(crate) fn parser(format: AudioFormat) -> crate::frames::Parser {
    match format {
        AudioFormat::Mp3 => crate::frames::mpeg,
        AudioFormat::Aac => crate::frames::adts,
        AudioFormat::Opus => crate::frames::ogg,
    }
}

/// ffmpeg's output options for an output format and bitrate (renditions, live conversion,
/// crossfade): MP3 as bare frames (no Xing/Info frame, no ID3 tag, so concatenated tracks are
/// gapless and every byte is playing time), AAC in ADTS, Opus in Ogg pages of 100 ms (fine
/// enough to pace by).
pub(crate) fn encoder_args(format: AudioFormat, kbps: u32) -> Vec<String> {
    let bitrate = format!("{kbps}k");
    let args: Vec<&str> = match format {
        AudioFormat::Aac => vec![
            "-ac", "2", "-ar", "44100", "-c:a", "aac", "-b:a", &bitrate, "-f", "adts",
        ],
        AudioFormat::Opus => vec![
            "-ac",
            "2",
            "-ar",
            "48000",
            "-c:a",
            "libopus",
            "-b:a",
            &bitrate,
            "-page_duration",
            "100000",
            "-f",
            "ogg",
        ],
        AudioFormat::Mp3 => vec![
            "-ac",
            "2",
            "-ar",
            "44100",
            "-c:a",
            "libmp3lame",
            "-b:a",
            &bitrate,
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
            "-f",
            "mp3",
        ],
    };
    args.into_iter().map(str::to_string).collect()
}

/// Samples (at 44.1 kHz; Opus at 48 kHz) to keep of `src` so that, once the player drops the rendition's first
/// frame (the encoder's priming) and its last (the encoder's flush), tracks join with no silence
/// between them: the audio plus the encoder's delay must fill whole frames (MP3: 1152 samples,
/// LAME delays by 576; AAC: 1024, ffmpeg's encoder by a whole frame). At most one frame of the
/// track's very end is cut. `None` when the length cannot be measured.
fn gapless_length(src: &Path, format: AudioFormat) -> Option<u64> {
    // Opus (at 48 kHz): 20 ms packets after libopus's 312 samples of lookahead; whole packets
    // leave the last one no padding, which would be heard as silence where tracks join.
    let (frame, delay, rate) = match format {
        AudioFormat::Mp3 => (1152, 576, 44_100),
        AudioFormat::Aac => (1024, 0, 44_100),
        AudioFormat::Opus => (960, 312, 48_000),
    };
    let n = decoded_samples(src, rate)?;
    ((n + delay) / frame * frame)
        .checked_sub(delay)
        .filter(|k| *k > 0)
}

/// The exact length of `src` in samples at `rate`, by decoding it (container durations are
/// rounded).
fn decoded_samples(src: &Path, rate: u32) -> Option<u64> {
    use std::io::Read as _;
    let mut child = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(src)
        .args([
            "-vn",
            "-map",
            "0:a:0",
            "-ac",
            "1",
            "-ar",
            &rate.to_string(),
            "-f",
            "s16le",
            "pipe:1",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    child.wait().ok()?.success().then_some(bytes / 2)
}

/// Encodes `src` into `dst` as a bare frame stream; an error carries ffmpeg's own words.
fn encode(src: &Path, dst: &Path, format: AudioFormat, kbps: u32) -> anyhow::Result<()> {
    let mut cmd = ffmpeg_sidecar::command::FfmpegCommand::new_with_path("ffmpeg");
    cmd.hide_banner()
        .args(["-nostdin", "-v", "error"])
        .input(src.as_os_str())
        .args(["-vn", "-map", "0:a:0", "-map_metadata", "-1"])
        .args(encoder_args(format, kbps));
    if format == AudioFormat::Mp3 {
        // Without the bit reservoir every frame decodes on its own, so the player may skip a
        // track's first and last frames without damaging their neighbours.
        cmd.args(["-reservoir", "0"]);
    }
    if let Some(keep) = gapless_length(src, format) {
        let rate = if format == AudioFormat::Opus {
            48_000
        } else {
            44_100
        };
        cmd.args(["-af", &format!("aresample={rate},atrim=end_sample={keep}")]);
    }
    cmd.overwrite().output(dst.as_os_str());
    let mut child = cmd
        .spawn()
        .context("cannot start ffmpeg (is it installed?)")?;
    let mut errors = Vec::new();
    for event in child.iter()? {
        use ffmpeg_sidecar::event::FfmpegEvent;
        // With `-v error` everything ffmpeg logs is an error.
        if let FfmpegEvent::Log(_, msg) | FfmpegEvent::Error(msg) = event
            && errors.len() < 5
        {
            errors.push(msg);
        }
    }
    let status = child.wait()?;
    let size = std::fs::metadata(dst).map(|m| m.len()).unwrap_or(0);
    if !status.success() || size == 0 {
        anyhow::bail!(
            "{} is not playable audio: ffmpeg {status}{}",
            src.display(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        );
    }
    Ok(())
}

//! Checks that an upload is real, complete audio and reads what the library shows of it, with
//! the system's `ffprobe` and `ffmpeg` (never a downloaded binary).
//!
//! Two passes:
//! 1. `ffprobe` reads the container: codec, bitrate, tags and the duration the file *declares*
//!    (an MP3's Xing/Info header, FLAC's STREAMINFO, an MP4's `moov`, …).
//! 2. `ffmpeg` decodes the whole first audio stream into the null muxer and reports how much
//!    audio there really is (`-progress`) and how many decode errors it hit.
//!
//! The decode stops once it is past the longest playing time allowed (`media.max_duration_secs`):
//! a small file that decodes to hours of audio (silence compresses to almost nothing) is refused
//! as too long after decoding just over the limit, never the whole file. A file whose container
//! declares more than the limit is refused before any decoding.
//!
//! A file is refused when ffprobe finds no audio, when the decode fails or yields (almost)
//! nothing, when the decoded length disagrees with the declared one by more than
//! [`DURATION_MARGIN`] (a cut MP3 still declares its full length in its Xing header), or when
//! the decoder reports more than [`MAX_DECODE_ERRORS`] errors (damage inside the file). When
//! ffmpeg only *estimated* the declared duration from the bitrate (an MP3 or ADTS file with no
//! header saying its length) the comparison would prove nothing, so it is skipped: such a file
//! cut in half is indistinguishable from a shorter one.
//!
//! Both tools are restricted to local files (`-protocol_whitelist file`) and to the audio
//! containers below (`-format_whitelist`), so an uploaded playlist or a crafted container can
//! neither make them open URLs nor reach other files.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// The demuxers an upload may use: MP3, ADTS AAC, MP4/M4A, FLAC, Ogg (Vorbis, Opus), WAV,
/// Matroska/WebM audio.
pub const FORMATS: &str = "mp3,aac,mov,flac,ogg,wav,matroska";

/// The decoded length may differ from the declared one by this much, or by 1 % of it when that
/// is more (encoder delay and padding make them differ by a few tens of milliseconds).
pub const DURATION_MARGIN: Duration = Duration::from_millis(500);

/// Decode errors tolerated before a file counts as corrupt (a stray bad frame at a file's end is
/// common and inaudible).
pub const MAX_DECODE_ERRORS: u64 = 10;

/// Less decoded audio than this is no track.
const MIN_AUDIO: Duration = Duration::from_millis(100);

const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Decoding runs at hundreds of times real time; this bounds a pathological file.
const DECODE_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest tag kept, in characters.
const MAX_TAG: usize = 500;

/// What the library records of an accepted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub codec: String,
    pub bitrate_kbps: u32,
    /// Measured by decoding.
    pub duration_ms: u64,
    pub artist: String,
    pub title: String,
    pub album: String,
    /// The file embeds a picture (ID3 APIC, a FLAC or Vorbis picture block, an MP4 cover):
    /// ffprobe lists it as a video stream with the `attached_pic` disposition.
    pub picture: bool,
}

/// Why a file was refused; the messages are sentences for the uploader.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "The file is not audio that Onda can read (MP3, AAC/M4A, FLAC, Ogg Vorbis/Opus, WAV or \
         Matroska audio)."
    )]
    NotAudio,
    #[error("The file contains no playable audio.")]
    Empty,
    #[error(
        "The file is truncated or damaged: it declares {declared_ms} ms of audio but only \
         {decoded_ms} ms could be decoded."
    )]
    Truncated { declared_ms: u64, decoded_ms: u64 },
    #[error("The file is damaged: decoding it reported {errors} errors.")]
    Corrupt { errors: u64 },
    #[error("The file could not be decoded within {} seconds.", DECODE_TIMEOUT.as_secs())]
    TooSlow,
    #[error(
        "The file plays for more than {}, the longest this server accepts \
         (media.max_duration_secs = {}).", hms(*.limit_secs), .limit_secs
    )]
    TooLong { limit_secs: u64 },
    /// ffprobe/ffmpeg could not run at all: the server's fault, not the file's.
    #[error("cannot run {tool}: {source}")]
    Tool {
        tool: &'static str,
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FfprobeOutput {
    streams: Vec<FfprobeStream>,
    format: FfprobeFormat,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FfprobeStream {
    codec_type: String,
    codec_name: String,
    bit_rate: Option<String>,
    tags: BTreeMap<String, String>,
    disposition: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FfprobeFormat {
    duration: Option<String>,
    bit_rate: Option<String>,
    tags: BTreeMap<String, String>,
}

/// ffmpeg logs this when it computed a duration from the bitrate and the file size.
const ESTIMATED: &str = "Estimating duration from bitrate";

/// `3 h`, `1 h 30 min`, `90 s`.
fn hms(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (h, 0, 0) => format!("{h} h"),
        (h, m, 0) => format!("{h} h {m} min"),
        _ => format!("{secs} s"),
    }
}

/// Probes and decodes `path` (up to just past `max_duration`); `filename` supplies the title
/// when the file has none.
pub async fn probe(
    path: &Path,
    filename: &str,
    max_duration: Duration,
) -> Result<Probed, ProbeError> {
    let too_long = ProbeError::TooLong {
        limit_secs: max_duration.as_secs(),
    };
    let input = file_url(path);
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-hide_banner", "-v", "warning"])
        .args(["-protocol_whitelist", "file", "-format_whitelist", FORMATS])
        .args(["-print_format", "json", "-show_format", "-show_streams"])
        .arg(&input)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => {
            return Err(ProbeError::Tool {
                tool: "ffprobe",
                source,
            });
        }
        Err(_) => return Err(ProbeError::NotAudio),
    };
    if !out.status.success() {
        return Err(ProbeError::NotAudio);
    }
    let info: FfprobeOutput =
        serde_json::from_slice(&out.stdout).map_err(|_| ProbeError::NotAudio)?;
    let stream = info
        .streams
        .iter()
        .find(|s| s.codec_type == "audio" && !s.codec_name.is_empty())
        .ok_or(ProbeError::NotAudio)?;
    let estimated = String::from_utf8_lossy(&out.stderr).contains(ESTIMATED);
    let declared = info
        .format
        .duration
        .as_deref()
        .and_then(|d| d.trim().parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0)
        .map(Duration::from_secs_f64);

    if declared.is_some_and(|d| !estimated && d > max_duration + DURATION_MARGIN) {
        return Err(too_long);
    }
    let decoded = decode(&input, "0:a:0", max_duration + DURATION_MARGIN, None).await?;
    if decoded.duration < MIN_AUDIO {
        return Err(ProbeError::Empty);
    }
    if decoded.duration > max_duration {
        return Err(too_long);
    }
    if let Some(declared) = declared.filter(|_| !estimated)
        && disagree(declared, decoded.duration)
    {
        return Err(ProbeError::Truncated {
            declared_ms: millis(declared),
            decoded_ms: millis(decoded.duration),
        });
    }
    if decoded.errors > MAX_DECODE_ERRORS {
        return Err(ProbeError::Corrupt {
            errors: decoded.errors,
        });
    }

    let tag = |name: &str| {
        find_tag(&info.format.tags, name)
            .or_else(|| find_tag(&stream.tags, name))
            .map(clean_tag)
            .unwrap_or_default()
    };
    let mut title = tag("title");
    if title.is_empty() {
        title = clean_tag(stem(filename));
    }
    let bitrate = stream
        .bit_rate
        .as_deref()
        .or(info.format.bit_rate.as_deref())
        .and_then(|b| b.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Probed {
        codec: stream.codec_name.clone(),
        bitrate_kbps: u32::try_from((bitrate + 500) / 1000).unwrap_or(u32::MAX),
        duration_ms: millis(decoded.duration),
        artist: tag("artist"),
        title,
        album: tag("album"),
        picture: info.streams.iter().any(|s| {
            s.codec_type == "video"
                && s.disposition.get("attached_pic") == Some(&serde_json::json!(1))
        }),
    })
}

pub(crate) struct Decoded {
    pub duration: Duration,
    pub errors: u64,
}

/// Decodes one stream (`map`, e.g. "0:a:0" for the first audio stream) to nowhere, for at most
/// `limit` of it: how long it really is (up to the limit) and how many errors the decoder
/// logged. Output is read line by line, so a file that makes ffmpeg log an error per frame
/// cannot fill memory. `max_pixels` bounds a video decoder's pictures.
pub(crate) async fn decode(
    input: &str,
    map: &str,
    limit: Duration,
    max_pixels: Option<u64>,
) -> Result<Decoded, ProbeError> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-nostats", "-v", "error"])
        .args(["-protocol_whitelist", "file", "-format_whitelist", FORMATS]);
    if let Some(max) = max_pixels {
        cmd.args(["-max_pixels", &max.to_string()]);
    }
    cmd.arg("-i")
        .arg(input)
        .args(["-map", map])
        // An output duration: ffmpeg stops decoding there (it would read the whole input).
        .arg("-t")
        .arg(format!("{:.3}", limit.as_secs_f64()))
        .args(["-f", "null", "-progress", "pipe:1", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ProbeError::Tool {
        tool: "ffmpeg",
        source,
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ProbeError::Tool {
            tool: "ffmpeg",
            source: std::io::Error::other("no output pipes"),
        });
    };
    let progress = async {
        let mut last_us: Option<u64> = None;
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(v) = line.strip_prefix("out_time_us=")
                && let Ok(us) = v.trim().parse::<u64>()
            {
                last_us = Some(us);
            }
        }
        last_us
    };
    let errors = async {
        let mut n: u64 = 0;
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.trim().is_empty() {
                n += 1;
            }
        }
        n
    };
    let run = async {
        let (last_us, errors, status) = tokio::join!(progress, errors, child.wait());
        (last_us, errors, status)
    };
    let (last_us, errors, status) = tokio::time::timeout(DECODE_TIMEOUT, run)
        .await
        .map_err(|_| ProbeError::TooSlow)?;
    let status = status.map_err(|source| ProbeError::Tool {
        tool: "ffmpeg",
        source,
    })?;
    if !status.success() {
        return Err(ProbeError::NotAudio);
    }
    Ok(Decoded {
        duration: Duration::from_micros(last_us.unwrap_or(0)),
        errors,
    })
}

/// `file:` + the path, so a path can never be taken for another protocol or an option.
pub(crate) fn file_url(path: &Path) -> String {
    format!("file:{}", path.display())
}

fn disagree(declared: Duration, decoded: Duration) -> bool {
    let margin = DURATION_MARGIN.max(declared / 100);
    declared.abs_diff(decoded) > margin
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Tag names differ in case between containers (`artist` in ID3 as ffmpeg shows it, `ARTIST`
/// in Vorbis comments).
fn find_tag<'a>(tags: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

/// Control characters out (a NUL cannot even be stored in PostgreSQL text), trimmed, bounded.
pub fn clean_tag(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_TAG)
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn stem(filename: &str) -> &str {
    match filename.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => filename,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_disagree_beyond_the_margin() {
        let s = Duration::from_secs_f64;
        // LAME's padding: an MP3 declares a few tens of ms more than it decodes to.
        assert!(!disagree(s(10.031), s(10.0)));
        assert!(disagree(s(10.031), s(4.99)), "cut in half");
        assert!(!disagree(s(600.0), s(595.0)), "1 % of a long file");
        assert!(disagree(s(600.0), s(590.0)));
        assert!(
            disagree(s(5.0), s(10.0)),
            "longer than declared is wrong too"
        );
    }

    #[test]
    fn limits_read_as_durations() {
        assert_eq!(hms(3 * 3600), "3 h");
        assert_eq!(hms(5400), "1 h 30 min");
        assert_eq!(hms(120), "2 min");
        assert_eq!(hms(61), "61 s");
    }

    #[test]
    fn tags_are_found_in_any_case_and_cleaned() {
        let tags: BTreeMap<String, String> = [
            ("ARTIST".to_string(), " Nina\u{0} Simone ".to_string()),
            ("title".to_string(), "  ".to_string()),
        ]
        .into();
        assert_eq!(
            find_tag(&tags, "artist").map(clean_tag),
            Some("Nina  Simone".into())
        );
        assert_eq!(find_tag(&tags, "title"), None, "blank is absent");
        assert_eq!(clean_tag(&"x".repeat(600)).len(), MAX_TAG);
        assert_eq!(stem("a.b.mp3"), "a.b");
        assert_eq!(stem(".mp3"), ".mp3");
        assert_eq!(stem("noext"), "noext");
    }

    /// Ten minutes of audio that declare no length: the decode stops just past the limit.
    #[tokio::test]
    async fn the_decode_stops_past_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("long.mka");
        let out = std::process::Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=8000:cl=mono",
            ])
            .args(["-t", "600", "-c:a", "pcm_s16le", "-f", "matroska", "pipe:1"])
            .output()
            .expect("ffmpeg runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&p, &out.stdout).expect("write");
        let decoded = decode(&file_url(&p), "0:a:0", Duration::from_secs(5), None)
            .await
            .unwrap_or_else(|e| panic!("decodes: {e}"));
        assert!(
            (Duration::from_millis(4900)..=Duration::from_millis(5200)).contains(&decoded.duration),
            "{:?}",
            decoded.duration
        );
        let err = probe(&p, "long.mka", Duration::from_secs(5))
            .await
            .expect_err("too long");
        assert!(
            matches!(err, ProbeError::TooLong { limit_secs: 5 }),
            "{err}"
        );
        assert!(err.to_string().contains("5 s"), "{err}");
    }

    #[tokio::test]
    async fn a_text_file_is_not_audio() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("notes.mp3");
        std::fs::write(&p, "these are my notes, not a song\n".repeat(20)).expect("write");
        let err = probe(&p, "notes.mp3", Duration::from_secs(60))
            .await
            .expect_err("refused");
        assert!(matches!(err, ProbeError::NotAudio), "{err}");
    }
}

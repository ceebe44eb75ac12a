//! What a message attachment may be, and the check that an upload's bytes are what its
//! `Content-Type` says: the types accepted ([`accepted`]), then `ffprobe` to identify the
//! container and its streams, then a decode with `ffmpeg` — one frame of an image, the whole
//! of an audio file (through [`super::probe::probe`], as the media library checks its files) or
//! of a video (up to `media.max_duration_secs`).
//!
//! The decision between identification and decode is a pure function ([`classify`]) over what
//! ffprobe reported, so every refusal is tested without a file. As in `probe`, both tools read
//! only local files (`-protocol_whitelist file`) through the demuxers listed here
//! (`-format_whitelist`): never `image2`, which would read other files named by a pattern.
//! Decoders refuse pictures over [`MAX_PIXELS`] (`-max_pixels`), so a small file that declares a
//! huge picture cannot make ffmpeg allocate gigabytes.

use super::probe::{self, ProbeError};
use onda_shared::api::MediaType;
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Every demuxer an attachment may be read with.
const DEMUXERS: &str = "png_pipe,jpeg_pipe,webp_pipe,gif,mp3,aac,mov,flac,ogg,wav,matroska";

/// The largest picture, in pixels, an image or a video frame may have (8000 × 5000).
pub const MAX_PIXELS: u64 = 40_000_000;

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const DECODE_TIMEOUT: Duration = Duration::from_secs(300);

/// Less decoded video than this is no video.
const MIN_VIDEO: Duration = Duration::from_millis(40);

/// A content type attachments may have: what it is, and the demuxers (ffprobe's first name of
/// the format) its content may be read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub content_type: &'static str,
    pub media_type: MediaType,
    demuxers: &'static [&'static str],
}

const fn kind(
    content_type: &'static str,
    media_type: MediaType,
    demuxers: &'static [&'static str],
) -> Accepted {
    Accepted {
        content_type,
        media_type,
        demuxers,
    }
}

/// The types accepted, as browsers name them.
const TYPES: &[Accepted] = &[
    kind("image/jpeg", MediaType::Image, &["jpeg_pipe"]),
    kind("image/png", MediaType::Image, &["png_pipe"]),
    kind("image/webp", MediaType::Image, &["webp_pipe"]),
    kind("image/gif", MediaType::Image, &["gif"]),
    kind("audio/mpeg", MediaType::Audio, &["mp3"]),
    kind("audio/mp4", MediaType::Audio, &["mov"]),
    kind("audio/x-m4a", MediaType::Audio, &["mov"]),
    kind("audio/aac", MediaType::Audio, &["aac", "mov"]),
    kind("audio/flac", MediaType::Audio, &["flac"]),
    kind("audio/x-flac", MediaType::Audio, &["flac"]),
    kind("audio/ogg", MediaType::Audio, &["ogg"]),
    kind("audio/opus", MediaType::Audio, &["ogg"]),
    kind("audio/wav", MediaType::Audio, &["wav"]),
    kind("audio/x-wav", MediaType::Audio, &["wav"]),
    kind("audio/wave", MediaType::Audio, &["wav"]),
    kind("audio/webm", MediaType::Audio, &["matroska"]),
    kind("video/mp4", MediaType::Video, &["mov"]),
    kind("video/quicktime", MediaType::Video, &["mov"]),
    kind("video/webm", MediaType::Video, &["matroska"]),
    kind("video/x-matroska", MediaType::Video, &["matroska"]),
];

/// The accepted type a `Content-Type` header names (parameters and case ignored), if any.
pub fn accepted(header: &str) -> Option<Accepted> {
    let essence = header.split(';').next().unwrap_or_default().trim();
    TYPES
        .iter()
        .find(|t| t.content_type.eq_ignore_ascii_case(essence))
        .copied()
}

/// The accepted types, for an error message.
pub fn accepted_list() -> String {
    TYPES
        .iter()
        .map(|t| t.content_type)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the check measured of an accepted file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

/// Why an upload was refused; the messages are sentences for the uploader.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("The file was sent as {declared}, but its content is {found}.")]
    Mismatch {
        declared: &'static str,
        found: String,
    },
    #[error(
        "The picture is {width} × {height} pixels; an attachment may have at most {MAX_PIXELS} \
         pixels."
    )]
    TooManyPixels { width: u32, height: u32 },
    #[error("The file was sent as {declared}, but it could not be decoded: it is damaged.")]
    Undecodable { declared: &'static str },
    #[error("The file is damaged: decoding it reported {errors} errors.")]
    Corrupt { errors: u64 },
    #[error("The file could not be checked within {} seconds.", DECODE_TIMEOUT.as_secs())]
    TooSlow,
    #[error(
        "The video plays for more than {limit_secs} s, the longest this server accepts \
         (media.max_duration_secs)."
    )]
    TooLong { limit_secs: u64 },
    /// The audio check of the media library refused it.
    #[error("{0}")]
    Audio(ProbeError),
    /// ffprobe/ffmpeg could not run at all: the server's fault, not the file's.
    #[error("cannot run {tool}: {source}")]
    Tool {
        tool: &'static str,
        source: std::io::Error,
    },
}

impl CheckError {
    /// True when the server, not the file, is at fault.
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            CheckError::Tool { .. } | CheckError::Audio(ProbeError::Tool { .. })
        )
    }
}

/// What ffprobe reports, as far as the check reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Probe {
    pub streams: Vec<Stream>,
    pub format: Format,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Stream {
    pub codec_type: String,
    pub codec_name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub disposition: Disposition,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Disposition {
    /// Cover art of an audio file (an MP3's APIC frame), not video.
    pub attached_pic: u8,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Format {
    /// Comma-separated names of the demuxer, e.g. "mov,mp4,m4a,3gp,3g2,mj2".
    pub format_name: String,
}

impl Stream {
    fn is_picture(&self) -> bool {
        self.codec_type == "video" && self.disposition.attached_pic == 0
    }
}

/// What to decode once identification passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// The first frame of the image, read with this demuxer.
    Image {
        demuxer: &'static str,
        width: u32,
        height: u32,
    },
    /// The whole audio, as the media library checks its files.
    Audio,
    /// The first video stream, up to the longest duration allowed.
    Video { width: u32, height: u32 },
}

/// How a reader would call what ffprobe found.
fn describe(demuxer: &str) -> String {
    match demuxer {
        "png_pipe" => "a PNG image",
        "jpeg_pipe" => "a JPEG image",
        "webp_pipe" => "a WebP image",
        "gif" => "a GIF image",
        "mp3" => "MP3 audio",
        "aac" => "AAC audio",
        "mov" => "an MP4/QuickTime file",
        "flac" => "FLAC audio",
        "ogg" => "an Ogg file",
        "wav" => "WAV audio",
        "matroska" => "a WebM/Matroska file",
        "" => "nothing Onda can read as an image, audio or video",
        _ => "another kind of file",
    }
    .to_string()
}

/// Decides from ffprobe's report (None when it could not read the file) whether the content is
/// what `declared` says, and what to decode to be sure.
pub fn classify(declared: Accepted, probe: Option<&Probe>) -> Result<Decode, CheckError> {
    let demuxer = probe
        .map(|p| p.format.format_name.split(',').next().unwrap_or_default())
        .unwrap_or_default();
    let mismatch = |found: String| CheckError::Mismatch {
        declared: declared.content_type,
        found,
    };
    let (Some(probe), Some(demuxer)) = (
        probe,
        declared.demuxers.iter().find(|d| **d == demuxer).copied(),
    ) else {
        return Err(mismatch(describe(demuxer)));
    };
    let picture = probe.streams.iter().find(|s| s.is_picture());
    let size = |s: &Stream| match (s.width, s.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => {
            if u64::from(w) * u64::from(h) > MAX_PIXELS {
                Err(CheckError::TooManyPixels {
                    width: w,
                    height: h,
                })
            } else {
                Ok((w, h))
            }
        }
        _ => Err(mismatch(format!(
            "{} without a picture size",
            describe(demuxer)
        ))),
    };
    match declared.media_type {
        MediaType::Image => {
            let stream = picture
                .ok_or_else(|| mismatch(format!("{} with no picture", describe(demuxer))))?;
            let (width, height) = size(stream)?;
            Ok(Decode::Image {
                demuxer,
                width,
                height,
            })
        }
        MediaType::Audio => {
            if picture.is_some() {
                return Err(mismatch(format!("{} with video", describe(demuxer))));
            }
            if !probe.streams.iter().any(|s| s.codec_type == "audio") {
                return Err(mismatch(format!("{} with no audio", describe(demuxer))));
            }
            Ok(Decode::Audio)
        }
        MediaType::Video => {
            let stream =
                picture.ok_or_else(|| mismatch(format!("{} with no video", describe(demuxer))))?;
            let (width, height) = size(stream)?;
            Ok(Decode::Video { width, height })
        }
    }
}

/// Checks that the file at `path` is real media of the `declared` type: identified, then
/// decoded (audio and video up to `max_duration`).
pub async fn check(
    path: &Path,
    declared: Accepted,
    max_duration: Duration,
) -> Result<Checked, CheckError> {
    let input = probe::file_url(path);
    let report = identify(&input).await?;
    match classify(declared, report.as_ref())? {
        Decode::Image {
            demuxer,
            width,
            height,
        } => {
            decode_frame(&input, demuxer, declared.content_type).await?;
            Ok(Checked {
                width: Some(width),
                height: Some(height),
                duration_ms: None,
            })
        }
        Decode::Audio => {
            let probed = probe::probe(path, "attachment", max_duration)
                .await
                .map_err(CheckError::Audio)?;
            Ok(Checked {
                width: None,
                height: None,
                duration_ms: Some(probed.duration_ms),
            })
        }
        Decode::Video { width, height } => {
            let limit = max_duration + probe::DURATION_MARGIN;
            let decoded = probe::decode(&input, "0:v:0", limit, Some(MAX_PIXELS))
                .await
                .map_err(|e| match e {
                    ProbeError::Tool { tool, source } => CheckError::Tool { tool, source },
                    ProbeError::TooSlow => CheckError::TooSlow,
                    _ => CheckError::Undecodable {
                        declared: declared.content_type,
                    },
                })?;
            if decoded.duration < MIN_VIDEO {
                return Err(CheckError::Undecodable {
                    declared: declared.content_type,
                });
            }
            if decoded.duration > max_duration {
                return Err(CheckError::TooLong {
                    limit_secs: max_duration.as_secs(),
                });
            }
            if decoded.errors > probe::MAX_DECODE_ERRORS {
                return Err(CheckError::Corrupt {
                    errors: decoded.errors,
                });
            }
            Ok(Checked {
                width: Some(width),
                height: Some(height),
                duration_ms: Some(u64::try_from(decoded.duration.as_millis()).unwrap_or(u64::MAX)),
            })
        }
    }
}

/// ffprobe's report of the file, or None when it reads as nothing it knows.
async fn identify(input: &str) -> Result<Option<Probe>, CheckError> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-hide_banner", "-v", "error"])
        .args(["-protocol_whitelist", "file", "-format_whitelist", DEMUXERS])
        .args(["-print_format", "json", "-show_format", "-show_streams"])
        .arg(input)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => {
            return Err(CheckError::Tool {
                tool: "ffprobe",
                source,
            });
        }
        Err(_) => return Err(CheckError::TooSlow),
    };
    if !out.status.success() {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&out.stdout).ok())
}

/// Decodes the first frame of an image; any error the decoder reports refuses it.
async fn decode_frame(
    input: &str,
    demuxer: &str,
    declared: &'static str,
) -> Result<(), CheckError> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-nostats", "-v", "error"])
        .args(["-protocol_whitelist", "file", "-f", demuxer])
        .args(["-max_pixels", &MAX_PIXELS.to_string()])
        .arg("-i")
        .arg(input)
        .args(["-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => {
            return Err(CheckError::Tool {
                tool: "ffmpeg",
                source,
            });
        }
        Err(_) => return Err(CheckError::TooSlow),
    };
    if out.status.success() && out.stderr.iter().all(u8::is_ascii_whitespace) {
        Ok(())
    } else {
        Err(CheckError::Undecodable { declared })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of ffprobe's report; `size` for pictures, `cover` for an audio file's art.
    fn stream(kind: &str, codec: &str, size: Option<(u32, u32)>, cover: bool) -> Stream {
        Stream {
            codec_type: kind.to_string(),
            codec_name: codec.to_string(),
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            disposition: Disposition {
                attached_pic: u8::from(cover),
            },
        }
    }

    fn report(format: &str, streams: Vec<Stream>) -> Probe {
        Probe {
            format: Format {
                format_name: format.to_string(),
            },
            streams,
        }
    }

    fn ty(t: &str) -> Accepted {
        accepted(t).unwrap_or_else(|| panic!("{t} is accepted"))
    }

    #[test]
    fn content_types_are_read_like_browsers_send_them() {
        assert_eq!(ty("IMAGE/PNG; charset=binary").content_type, "image/png");
        assert_eq!(ty("audio/mpeg").media_type, MediaType::Audio);
        assert_eq!(ty("video/webm").media_type, MediaType::Video);
        for refused in [
            "image/svg+xml",
            "text/html",
            "application/octet-stream",
            "",
            "image",
        ] {
            assert!(accepted(refused).is_none(), "{refused}");
        }
        assert!(accepted_list().contains("image/webp"));
    }

    #[test]
    fn an_image_must_be_the_declared_format_with_a_picture() {
        let png = report(
            "png_pipe",
            vec![stream("video", "png", Some((64, 48)), false)],
        );
        assert_eq!(
            classify(ty("image/png"), Some(&png)).ok(),
            Some(Decode::Image {
                demuxer: "png_pipe",
                width: 64,
                height: 48
            })
        );
        let e = classify(ty("image/jpeg"), Some(&png)).expect_err("a PNG is no JPEG");
        assert_eq!(
            e.to_string(),
            "The file was sent as image/jpeg, but its content is a PNG image."
        );
        let e = classify(ty("image/png"), None).expect_err("unreadable");
        assert!(e.to_string().contains("nothing Onda can read"), "{e}");
        let huge = report(
            "png_pipe",
            vec![stream("video", "png", Some((100_000, 100_000)), false)],
        );
        assert!(matches!(
            classify(ty("image/png"), Some(&huge)),
            Err(CheckError::TooManyPixels { .. })
        ));
        let sizeless = report("gif", vec![stream("video", "gif", None, false)]);
        assert!(classify(ty("image/gif"), Some(&sizeless)).is_err());
    }

    #[test]
    fn audio_may_have_cover_art_but_no_video() {
        let mp3 = report(
            "mp3",
            vec![
                stream("audio", "mp3", None, false),
                stream("video", "mjpeg", Some((300, 300)), true),
            ],
        );
        assert_eq!(
            classify(ty("audio/mpeg"), Some(&mp3)).ok(),
            Some(Decode::Audio)
        );
        let mp4 = report(
            "mov,mp4,m4a,3gp,3g2,mj2",
            vec![
                stream("video", "h264", Some((640, 360)), false),
                stream("audio", "aac", None, false),
            ],
        );
        let e = classify(ty("audio/mp4"), Some(&mp4)).expect_err("video sent as audio");
        assert!(e.to_string().contains("with video"), "{e}");
        assert_eq!(
            classify(ty("video/mp4"), Some(&mp4)).ok(),
            Some(Decode::Video {
                width: 640,
                height: 360
            })
        );
        let e = classify(ty("video/webm"), Some(&mp4)).expect_err("an MP4 is no WebM");
        assert!(e.to_string().contains("MP4/QuickTime"), "{e}");
        let silent = report("matroska,webm", vec![stream("video", "vp9", None, false)]);
        assert!(classify(ty("audio/webm"), Some(&silent)).is_err());
    }
}

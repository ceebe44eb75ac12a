//! Cover art: the picture an uploaded audio file embeds (ID3 APIC, a FLAC or Vorbis picture
//! block, an MP4 cover), or a picture a tenant uploads as its station's default, scaled with the
//! system's `ffmpeg` to two JPEGs (500 and 100 px on the longer side, never enlarged) and named
//! by the SHA-256 of the larger one, so the same cover on a hundred tracks is stored once.
//!
//! As in `probe` and `attachment`, ffmpeg reads only the local file (`-protocol_whitelist file`)
//! through an allowed list of demuxers, and its decoders refuse pictures over
//! [`super::attachment::MAX_PIXELS`]; a picture that does not decode is no cover (an upload
//! is never refused for its art).

use super::attachment::MAX_PIXELS;
use super::probe;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// What a station's default picture may be read with.
pub const IMAGE_DEMUXERS: &str = "png_pipe,jpeg_pipe,webp_pipe";

/// The picture types a station's default may be uploaded as.
pub const IMAGE_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// A larger picture than this (in bytes) is refused as a station's default.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A picture scaled to both sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Art {
    /// SHA-256 of `large`, lowercase hex.
    pub sha256: String,
    pub large: Vec<u8>,
    pub small: Vec<u8>,
}

/// The embedded picture of an audio file, scaled; `None` when it has none that decodes.
pub async fn from_audio(path: &Path) -> std::io::Result<Option<Art>> {
    scale(path, probe::FORMATS).await
}

/// A picture file (JPEG, PNG or WebP), scaled; `None` when it does not decode as one.
pub async fn from_image(path: &Path) -> std::io::Result<Option<Art>> {
    scale(path, IMAGE_DEMUXERS).await
}

async fn scale(path: &Path, demuxers: &str) -> std::io::Result<Option<Art>> {
    let dir = tempfile::tempdir()?;
    let (large, small) = (dir.path().join("500.jpg"), dir.path().join("100.jpg"));
    // One decode, split into both sizes; `min(…, iw)` keeps a small picture from being blown up.
    let filter = "[0:v:0]split=2[a][b];\
        [a]scale='min(500,iw)':'min(500,ih)':force_original_aspect_ratio=decrease[l];\
        [b]scale='min(100,iw)':'min(100,ih)':force_original_aspect_ratio=decrease[s]";
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-nostats", "-v", "error"])
        .args(["-protocol_whitelist", "file", "-format_whitelist", demuxers])
        .args(["-max_pixels", &MAX_PIXELS.to_string()])
        .arg("-i")
        .arg(probe::file_url(path))
        .args(["-filter_complex", filter])
        .args([
            "-map",
            "[l]",
            "-frames:v",
            "1",
            "-c:v",
            "mjpeg",
            "-q:v",
            "3",
        ])
        .args(["-f", "mjpeg"])
        .arg(probe::file_url(&large))
        .args([
            "-map",
            "[s]",
            "-frames:v",
            "1",
            "-c:v",
            "mjpeg",
            "-q:v",
            "4",
        ])
        .args(["-f", "mjpeg"])
        .arg(probe::file_url(&small))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let Ok(out) = tokio::time::timeout(TIMEOUT, cmd.output()).await else {
        return Ok(None);
    };
    if !out?.status.success() {
        return Ok(None);
    }
    let (Ok(large), Ok(small)) = (tokio::fs::read(&large).await, tokio::fs::read(&small).await)
    else {
        return Ok(None);
    };
    if !is_jpeg(&large) || !is_jpeg(&small) {
        return Ok(None);
    }
    Ok(Some(Art {
        sha256: hex::encode(Sha256::digest(&large)),
        large,
        small,
    }))
}

/// A JPEG starts with SOI and ends with EOI; anything else is a failed encode.
fn is_jpeg(b: &[u8]) -> bool {
    b.len() > 4 && b.starts_with(&[0xFF, 0xD8]) && b.ends_with(&[0xFF, 0xD9])
}

/// The public path of a picture at one of its sizes (`500` or `100`).
pub fn path(sha256: &str, size: u32) -> String {
    format!("/art/{sha256}/{size}.jpg")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ffmpeg(args: &[&str]) {
        let st = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y"])
            .args(args)
            .status()
            .await
            .expect("ffmpeg runs");
        assert!(st.success(), "ffmpeg {args:?}");
    }

    async fn dimensions(jpeg: &[u8]) -> (u32, u32) {
        let dir = tempfile::tempdir().expect("temp");
        let p = dir.path().join("x.jpg");
        std::fs::write(&p, jpeg).expect("write");
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&p)
            .output()
            .await
            .expect("ffprobe");
        let s = String::from_utf8_lossy(&out.stdout);
        let (w, h) = s.trim().split_once(',').expect("w,h");
        (w.parse().expect("w"), h.parse().expect("h"))
    }

    #[tokio::test]
    async fn an_mp3_or_flac_with_a_cover_gives_both_sizes_and_one_without_gives_none() {
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path().display();
        let cover = format!("{d}/cover.png");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=800x600",
            "-frames:v",
            "1",
            &cover,
        ])
        .await;
        let mut hashes = Vec::new();
        for (ext, codec) in [("mp3", "libmp3lame"), ("flac", "flac")] {
            let (bare, with) = (format!("{d}/bare.{ext}"), format!("{d}/with.{ext}"));
            ffmpeg(&["-f", "lavfi", "-i", "sine=d=1", "-c:a", codec, &bare]).await;
            ffmpeg(&[
                "-i",
                &bare,
                "-i",
                &cover,
                "-map",
                "0:a",
                "-map",
                "1:v",
                "-c:a",
                "copy",
                "-disposition:v",
                "attached_pic",
                &with,
            ])
            .await;
            assert_eq!(
                from_audio(Path::new(&bare)).await.expect("runs"),
                None,
                "{ext}"
            );
            let art = from_audio(Path::new(&with))
                .await
                .expect("runs")
                .unwrap_or_else(|| panic!("a cover in the {ext}"));
            assert_eq!(dimensions(&art.large).await, (500, 375));
            assert_eq!(dimensions(&art.small).await, (100, 75));
            assert_eq!(art.sha256, hex::encode(Sha256::digest(&art.large)));
            hashes.push(art.sha256);
        }
        // The same picture in two files is one hash: stored once.
        assert_eq!(hashes[0], hashes[1]);
    }

    /// A FLAC picture block (as Vorbis comments carry it, base64 in METADATA_BLOCK_PICTURE).
    fn picture_block(png: &[u8], width: u32, height: u32) -> Vec<u8> {
        let mime = b"image/png";
        let mut b = Vec::new();
        for n in [3, u32::try_from(mime.len()).expect("len")] {
            b.extend_from_slice(&n.to_be_bytes());
        }
        b.extend_from_slice(mime);
        let len = u32::try_from(png.len()).expect("len");
        for n in [0, width, height, 24, 0, len] {
            b.extend_from_slice(&n.to_be_bytes());
        }
        b.extend_from_slice(png);
        b
    }

    #[tokio::test]
    async fn an_ogg_vorbis_picture_comment_gives_a_cover() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path().display();
        let (cover, bare, with) = (
            format!("{d}/cover.png"),
            format!("{d}/bare.ogg"),
            format!("{d}/with.ogg"),
        );
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240",
            "-frames:v",
            "1",
            &cover,
        ])
        .await;
        ffmpeg(&["-f", "lavfi", "-i", "sine=d=1", "-c:a", "libvorbis", &bare]).await;
        let png = std::fs::read(&cover).expect("png");
        let comment = format!(
            "METADATA_BLOCK_PICTURE={}",
            base64::engine::general_purpose::STANDARD.encode(picture_block(&png, 320, 240))
        );
        ffmpeg(&["-i", &bare, "-c", "copy", "-metadata", &comment, &with]).await;
        assert_eq!(from_audio(Path::new(&bare)).await.expect("runs"), None);
        let art = from_audio(Path::new(&with))
            .await
            .expect("runs")
            .expect("the Vorbis picture");
        assert_eq!(dimensions(&art.large).await, (320, 240));
        assert_eq!(dimensions(&art.small).await, (100, 75));
    }

    #[tokio::test]
    async fn a_small_picture_is_not_enlarged_and_text_is_no_picture() {
        let dir = tempfile::tempdir().expect("temp");
        let small = dir.path().join("small.png");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=80x60",
            "-frames:v",
            "1",
            &small.display().to_string(),
        ])
        .await;
        let art = from_image(&small).await.expect("runs").expect("a picture");
        assert_eq!(dimensions(&art.large).await, (80, 60));
        assert_eq!(dimensions(&art.small).await, (80, 60));
        let text = dir.path().join("note.png");
        std::fs::write(&text, "not a picture").expect("write");
        assert_eq!(from_image(&text).await.expect("runs"), None);
    }
}

//! ICY metadata as Icecast frames it: every `metaint` audio bytes, one length byte L and L×16
//! bytes of `StreamTitle='…';StreamUrl='…';` padded with NULs; a single 0x00 when nothing changed
//! since the listener's last block. Pure code over bytes.

use bytes::Bytes;

/// The largest metadata payload one length byte can describe.
pub const MAX_BLOCK: usize = 255 * 16;

/// One version of a mount's metadata, encoded once and shared by every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Increases with every change, so a listener knows whether it has sent this one.
    pub version: u64,
    pub title: String,
    pub url: String,
    /// The encoded block, length byte included.
    pub block: Bytes,
    /// The ARTIST and TITLE comments the title was made of, when it came from an Ogg stream's
    /// comment header (status-json shows them apart, as Icecast does).
    pub tags: Option<crate::ogg::Tags>,
}

impl Metadata {
    pub fn new(version: u64, title: &str, url: &str) -> Metadata {
        Metadata {
            version,
            title: title.to_string(),
            url: url.to_string(),
            block: encode_block(title, url),
            tags: None,
        }
    }
}

/// Encodes a metadata block. Apostrophes are kept as they are (as Icecast does and players
/// expect); the text is cut at a character boundary when it does not fit.
pub fn encode_block(title: &str, url: &str) -> Bytes {
    let mut text = format!("StreamTitle='{title}';");
    if !url.is_empty() {
        text.push_str(&format!("StreamUrl='{url}';"));
    }
    if text.len() > MAX_BLOCK {
        let mut cut = MAX_BLOCK - 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("';");
    }
    let blocks = text.len().div_ceil(16);
    let mut out = Vec::with_capacity(1 + blocks * 16);
    out.push(u8::try_from(blocks).unwrap_or(255));
    out.extend_from_slice(text.as_bytes());
    out.resize(1 + blocks * 16, 0);
    Bytes::from(out)
}

static EMPTY_BLOCK: &[u8] = &[0];

/// Interleaves metadata blocks into one listener's audio.
#[derive(Debug, Clone)]
pub struct Interleaver {
    // u32, not usize: one of these lives with every ICY listener (intervals are at most 1 MiB).
    metaint: u32,
    until_block: u32,
    sent_version: Option<u64>,
}

impl Interleaver {
    pub fn new(metaint: usize) -> Interleaver {
        let metaint = u32::try_from(metaint).unwrap_or(u32::MAX).max(1);
        Interleaver {
            metaint,
            until_block: metaint,
            sent_version: None,
        }
    }

    /// Appends to `out` the pieces to send for `audio`: slices of it (no copy) and, where an
    /// interval ends, the block of `meta` (or a lone 0x00 when this listener has it already).
    pub fn frame(&mut self, audio: &Bytes, meta: &Metadata, out: &mut Vec<Bytes>) {
        let mut pos = 0;
        while pos < audio.len() {
            let until = usize::try_from(self.until_block).unwrap_or(usize::MAX);
            let n = until.min(audio.len() - pos);
            out.push(audio.slice(pos..pos + n));
            pos += n;
            // n ≤ until_block, which is a u32.
            self.until_block -= u32::try_from(n).unwrap_or(self.until_block);
            if self.until_block == 0 {
                if self.sent_version == Some(meta.version) {
                    out.push(Bytes::from_static(EMPTY_BLOCK));
                } else {
                    out.push(meta.block.clone());
                    self.sent_version = Some(meta.version);
                }
                self.until_block = self.metaint;
            }
        }
    }
}

/// Splits an ICY stream (as a relay receives it) back into audio and titles.
#[derive(Debug, Clone)]
pub struct Deinterleaver {
    metaint: usize,
    until_block: usize,
    state: DeState,
}

#[derive(Debug, Clone)]
enum DeState {
    Audio,
    Length,
    Meta { need: usize, buf: Vec<u8> },
}

impl Deinterleaver {
    pub fn new(metaint: usize) -> Deinterleaver {
        Deinterleaver {
            metaint: metaint.max(1),
            until_block: metaint.max(1),
            state: DeState::Audio,
        }
    }

    /// Feeds received bytes; audio goes to `audio`, each complete non-empty metadata text to
    /// `titles` (the raw `StreamTitle='…';…` text).
    pub fn feed(&mut self, data: &Bytes, audio: &mut Vec<Bytes>, titles: &mut Vec<String>) {
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                DeState::Audio => {
                    let n = self.until_block.min(data.len() - pos);
                    audio.push(data.slice(pos..pos + n));
                    pos += n;
                    self.until_block -= n;
                    if self.until_block == 0 {
                        self.state = DeState::Length;
                    }
                }
                DeState::Length => {
                    let need = usize::from(data[pos]) * 16;
                    pos += 1;
                    self.until_block = self.metaint;
                    self.state = if need == 0 {
                        DeState::Audio
                    } else {
                        DeState::Meta {
                            need,
                            buf: Vec::with_capacity(need),
                        }
                    };
                }
                DeState::Meta { need, buf } => {
                    let n = (*need - buf.len()).min(data.len() - pos);
                    buf.extend_from_slice(&data[pos..pos + n]);
                    pos += n;
                    if buf.len() == *need {
                        let text = String::from_utf8_lossy(buf)
                            .trim_end_matches('\0')
                            .to_string();
                        if !text.is_empty() {
                            titles.push(text);
                        }
                        self.state = DeState::Audio;
                    }
                }
            }
        }
    }
}

/// The value of `StreamTitle` in a metadata text.
pub fn stream_title(text: &str) -> Option<String> {
    let start = text.find("StreamTitle='")? + "StreamTitle='".len();
    let rest = &text[start..];
    // The title ends at the "';" that precedes the next key or the end (titles may hold ').
    let end = rest
        .match_indices("';")
        .map(|(i, _)| i)
        .find(|&i| {
            let after = &rest[i + 2..];
            after.is_empty()
                || after.starts_with("Stream")
                || after.trim_end_matches('\0').is_empty()
        })
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_shape() {
        let b = encode_block("Artist - Title", "");
        assert_eq!(b[0] as usize * 16 + 1, b.len());
        assert!(b[1..].starts_with(b"StreamTitle='Artist - Title';"));
        assert!(b.ends_with(&[0]));
        let long = encode_block(&"é".repeat(5000), "");
        assert_eq!(long[0], 255);
        assert!(std::str::from_utf8(long[1..].split(|&c| c == 0).next().expect("text")).is_ok());
        let with_url = encode_block("It's", "http://x");
        assert!(with_url[1..].starts_with(b"StreamTitle='It's';StreamUrl='http://x';"));
    }

    fn run(metaint: usize, chunks: &[usize], metas: &[(u64, &str)]) -> Vec<u8> {
        let mut il = Interleaver::new(metaint);
        let mut out = Vec::new();
        let mut n = 0u8;
        for (i, &len) in chunks.iter().enumerate() {
            let audio: Bytes = (0..len)
                .map(|_| {
                    n = n.wrapping_add(1);
                    n | 1
                })
                .collect::<Vec<u8>>()
                .into();
            let (v, t) = metas[i.min(metas.len() - 1)];
            let mut pieces = Vec::new();
            il.frame(&audio, &Metadata::new(v, t, ""), &mut pieces);
            for p in pieces {
                out.extend_from_slice(&p);
            }
        }
        out
    }

    #[test]
    fn interleave_then_deinterleave_round_trips() {
        let stream = run(
            100,
            &[30, 170, 1, 99, 250],
            &[(1, "One"), (1, "One"), (2, "Two"), (2, "Two"), (3, "Three")],
        );
        let mut de = Deinterleaver::new(100);
        let (mut audio, mut titles) = (Vec::new(), Vec::new());
        // Feed in awkward pieces.
        for piece in stream.chunks(7) {
            de.feed(&Bytes::copy_from_slice(piece), &mut audio, &mut titles);
        }
        let total: usize = audio.iter().map(Bytes::len).sum();
        assert_eq!(total, 30 + 170 + 1 + 99 + 250);
        assert!(
            audio.iter().all(|a| a.iter().all(|&b| b != 0)),
            "no metadata byte leaked into audio"
        );
        let titles: Vec<_> = titles.iter().filter_map(|t| stream_title(t)).collect();
        assert_eq!(
            titles,
            vec!["One", "Two", "Three"],
            "unchanged titles are not repeated"
        );
    }

    #[test]
    fn block_exactly_every_metaint_bytes() {
        let stream = run(16, &[16, 16, 8, 8], &[(1, "A")]);
        // "StreamTitle='A';" is exactly 16 bytes: 16 audio, block(1+16), 16 audio, 0x00,
        // 16 audio, 0x00.
        assert_eq!(stream[16], 1);
        assert_eq!(stream.len(), 16 + 17 + 16 + 1 + 16 + 1);
        assert_eq!(stream[16 + 17 + 16], 0);
    }

    #[test]
    fn titles_with_apostrophes() {
        assert_eq!(
            stream_title("StreamTitle='Guns N' Roses - Don't Cry';").as_deref(),
            Some("Guns N' Roses - Don't Cry")
        );
        assert_eq!(
            stream_title("StreamTitle='A';StreamUrl='u';").as_deref(),
            Some("A")
        );
        assert_eq!(stream_title("nothing"), None);
    }

    #[test]
    fn deinterleaver_never_panics_on_garbage() {
        let mut seed = 88172645463325252_u64;
        for metaint in [1, 2, 16, 100] {
            let mut de = Deinterleaver::new(metaint);
            for _ in 0..2000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let bytes: Vec<u8> = seed.to_le_bytes().to_vec();
                let (mut a, mut t) = (Vec::new(), Vec::new());
                de.feed(&Bytes::from(bytes), &mut a, &mut t);
            }
        }
    }
}

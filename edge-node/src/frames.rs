//! Audio frame headers of the formats mounts carry (MPEG audio layers I–III, AAC in ADTS), so a
//! listener's first byte is the start of a frame rather than the middle of one. Pure code over
//! bytes; any input is safe.

/// Reads the frame header at the start of a byte slice.
pub type Parser = fn(&[u8]) -> Option<Frame>;

/// One frame header: how long the frame is and, for MPEG audio and ADTS, how much audio it
/// holds (Ogg pages: 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub len: usize,
    /// Samples per channel in the frame.
    pub samples: u32,
    /// Sampling rate in Hz.
    pub rate: u32,
}

impl Frame {
    /// The frame's playing time in nanoseconds (0 when unknown).
    pub fn duration_ns(&self) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        u64::from(self.samples) * 1_000_000_000 / u64::from(self.rate)
    }
}

/// AAC sampling frequencies by ADTS index.
const ADTS_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

const MPEG1_L3: [u32; 16] = [
    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0,
];
const MPEG1_L2: [u32; 16] = [
    0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 0,
];
const MPEG1_L1: [u32; 16] = [
    0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 0,
];
const MPEG2_L1: [u32; 16] = [
    0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256, 0,
];
const MPEG2_L23: [u32; 16] = [
    0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0,
];
const RATES: [[u32; 3]; 4] = [
    [11025, 12000, 8000],  // MPEG 2.5
    [0, 0, 0],             // reserved
    [22050, 24000, 16000], // MPEG 2
    [44100, 48000, 32000], // MPEG 1
];

/// An MPEG audio frame header at the start of `b`.
pub fn mpeg(b: &[u8]) -> Option<Frame> {
    let h = b.get(..4)?;
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = usize::from((h[1] >> 3) & 3);
    let layer = (h[1] >> 1) & 3;
    let br_index = usize::from(h[2] >> 4);
    let sr_index = usize::from((h[2] >> 2) & 3);
    let pad = u32::from((h[2] >> 1) & 1);
    if version == 1 || layer == 0 || br_index == 0 || br_index == 15 || sr_index == 3 {
        return None;
    }
    let mpeg1 = version == 3;
    let kbps = match (mpeg1, layer) {
        (true, 1) => MPEG1_L3[br_index],
        (true, 2) => MPEG1_L2[br_index],
        (true, _) => MPEG1_L1[br_index],
        (false, 3) => MPEG2_L1[br_index],
        (false, _) => MPEG2_L23[br_index],
    };
    let rate = RATES[version][sr_index];
    let bits = kbps * 1000;
    let len = match layer {
        3 => (12 * bits / rate + pad) * 4,
        1 if !mpeg1 => 72 * bits / rate + pad,
        _ => 144 * bits / rate + pad,
    };
    let samples = match layer {
        3 => 384,
        1 if !mpeg1 => 576,
        _ => 1152,
    };
    (len >= 4).then_some(Frame {
        len: len as usize,
        samples,
        rate,
    })
}

/// An AAC ADTS frame header at the start of `b`.
pub fn adts(b: &[u8]) -> Option<Frame> {
    let h = b.get(..7)?;
    if h[0] != 0xFF || h[1] & 0xF6 != 0xF0 {
        return None;
    }
    // Sampling frequency index 13–15 are reserved.
    let rate = *ADTS_RATES.get(usize::from((h[2] >> 2) & 0xF))?;
    let len = (usize::from(h[3] & 0x3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
    // Each raw data block holds 1024 samples.
    let samples = 1024 * (u32::from(h[6] & 0x3) + 1);
    (len >= 7).then_some(Frame { len, samples, rate })
}

/// An Ogg page at the start of `b`: capture pattern, version 0 and a complete segment table.
pub fn ogg(b: &[u8]) -> Option<Frame> {
    if b.len() < 27 || &b[..4] != b"OggS" || b[4] != 0 {
        return None;
    }
    let n = usize::from(b[26]);
    let table = b.get(27..27 + n)?;
    let body: usize = table.iter().map(|&x| usize::from(x)).sum();
    Some(Frame {
        len: 27 + n + body,
        samples: 0,
        rate: 0,
    })
}

/// Largest set of header pages kept (comment headers can carry cover art).
const MAX_OGG_HEADERS: usize = 256 * 1024;

/// The header pages of an Ogg stream (codec setup: Vorbis' three header packets, OpusHead and
/// OpusTags), which a decoder needs before any audio page. A listener joining mid-stream gets
/// them first, as Icecast does. A new beginning-of-stream page (a chained stream: the next
/// track) replaces them.
#[derive(Debug, Default)]
pub struct OggHeaders {
    pending: Vec<u8>,
    pending_at: u64,
    headers: Vec<u8>,
    headers_start: u64,
    headers_end: u64,
    in_headers: bool,
}

impl OggHeaders {
    /// Feeds the stream's bytes in order.
    pub fn feed(&mut self, data: &[u8]) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut i = 0;
        while pending.len() - i >= 27 {
            let rest = &pending[i..];
            if &rest[..4] != b"OggS" {
                // Lost sync: skip to the next capture pattern.
                match rest[1..].windows(4).position(|w| w == b"OggS") {
                    Some(k) => i += 1 + k,
                    None => i = pending.len() - 3,
                }
                continue;
            }
            let Some(page) = ogg(rest) else {
                if rest.len() >= 27 + 255 || rest[4] != 0 {
                    i += 1; // not a page after all
                    continue;
                }
                break; // segment table not here yet
            };
            if rest.len() < page.len {
                break;
            }
            let bytes = &rest[..page.len];
            let bos = bytes[5] & 0x02 != 0;
            let granule = u64::from_le_bytes(bytes[6..14].try_into().unwrap_or([0xFF; 8]));
            let start = self.pending_at + i as u64;
            let end = start + page.len as u64;
            if bos {
                if !self.in_headers {
                    self.headers.clear();
                    self.headers_start = start;
                    self.in_headers = true;
                }
                self.append(bytes, end);
            } else if self.in_headers && granule == 0 {
                self.append(bytes, end);
            } else {
                self.in_headers = false;
            }
            i += page.len;
        }
        pending.drain(..i);
        self.pending_at += i as u64;
        if pending.len() > 1 << 20 {
            // A "page" this large is garbage: drop it and resync.
            self.pending_at += pending.len() as u64;
            pending.clear();
        }
        self.pending = pending;
    }

    fn append(&mut self, page: &[u8], end: u64) {
        if self.headers.len() + page.len() <= MAX_OGG_HEADERS {
            self.headers.extend_from_slice(page);
            self.headers_end = end;
        }
    }

    /// The header pages and the stream offsets where they start and end.
    pub fn headers(&self) -> (&[u8], u64, u64) {
        (&self.headers, self.headers_start, self.headers_end)
    }
}

/// True for Ogg-contained streams (Vorbis, Opus, FLAC in Ogg).
pub fn is_ogg(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct.contains("ogg") || ct.contains("opus") || ct.contains("vorbis")
}

/// The parser for a Content-Type, if the format is framed in a way we can find.
pub fn parser_for(content_type: &str) -> Option<Parser> {
    let ct = content_type.to_ascii_lowercase();
    if is_ogg(&ct) {
        Some(ogg)
    } else if ct.contains("mpeg") || ct.contains("mp3") {
        Some(mpeg)
    } else if ct.contains("aac") || ct.contains("aacp") {
        Some(adts)
    } else {
        None
    }
}

/// The offset of the first frame in `b` that is followed by another valid frame (or by the end
/// of `b`), which rules out most false syncs inside audio data.
pub fn find_frame(b: &[u8], parse: Parser) -> Option<usize> {
    (0..b.len()).find(|&i| {
        let Some(f) = parse(&b[i..]) else {
            return false;
        };
        let next = i + f.len;
        next >= b.len().saturating_sub(3) || parse(&b[next..]).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpeg_lengths() {
        // MPEG-1 Layer III, 128 kbps, 44.1 kHz, no padding: 417 bytes; with padding 418.
        assert_eq!(
            mpeg(&[0xFF, 0xFB, 0x90, 0x00]),
            Some(Frame {
                len: 417,
                samples: 1152,
                rate: 44100
            })
        );
        assert_eq!(
            mpeg(&[0xFF, 0xFB, 0x92, 0x00]),
            Some(Frame {
                len: 418,
                samples: 1152,
                rate: 44100
            })
        );
        // MPEG-2 Layer III, 64 kbps, 22.05 kHz: 72 * 64000 / 22050 = 208.
        assert_eq!(
            mpeg(&[0xFF, 0xF3, 0x80, 0x00]),
            Some(Frame {
                len: 208,
                samples: 576,
                rate: 22050
            })
        );
        // Free format, bad bitrate, reserved rate or version are not frames.
        assert_eq!(mpeg(&[0xFF, 0xFB, 0x00, 0x00]), None);
        assert_eq!(mpeg(&[0xFF, 0xFB, 0xF0, 0x00]), None);
        assert_eq!(mpeg(&[0xFF, 0xFB, 0x9C, 0x00]), None);
        assert_eq!(mpeg(&[0xFF, 0xEB, 0x90, 0x00]), None);
        assert_eq!(mpeg(&[0xFF, 0xFB]), None);
    }

    #[test]
    fn adts_lengths() {
        // Frame length 371 = 0b00101110011 spread over bytes 3..6.
        let len = 371usize;
        let h = [
            0xFF,
            0xF1,
            0x50,
            0x80 | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            ((len & 7) << 5) as u8 | 0x1F,
            0xFC,
        ];
        assert_eq!(
            adts(&h),
            Some(Frame {
                len,
                samples: 1024,
                rate: 44100
            })
        );
        assert_eq!(adts(&h).map(|f| f.duration_ns()), Some(23_219_954));
        assert_eq!(
            adts(&[0xFF, 0xF1, 0x3C, 0x80, 0, 0, 0]),
            None,
            "reserved sampling index"
        );
    }

    #[test]
    fn finds_a_frame_after_garbage_and_false_syncs() {
        let frame = |pad: bool| {
            let mut f = vec![0xFF, 0xFB, if pad { 0x92 } else { 0x90 }, 0x00];
            f.resize(if pad { 418 } else { 417 }, 0x11);
            f
        };
        let mut stream = vec![0x00, 0xFF, 0xFB, 0x90, 0x00, 0x42]; // a false sync, then garbage
        stream.extend(frame(false));
        stream.extend(frame(true));
        stream.extend(frame(false));
        assert_eq!(find_frame(&stream, mpeg), Some(6));
    }

    fn page(bos: bool, granule: u64, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(if bos { 2 } else { 0 });
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.push(1);
        p.push(u8::try_from(body.len()).expect("small body"));
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn ogg_header_pages_are_kept_and_replaced_by_the_next_chain() {
        let head: Vec<u8> = [page(true, 0, b"OpusHead"), page(false, 0, b"OpusTags")].concat();
        let audio: Vec<u8> = (1..5)
            .flat_map(|g| page(false, g * 960, b"audio"))
            .collect();
        let stream = [head.clone(), audio.clone()].concat();
        for piece in [1, 7, 64, stream.len()] {
            let mut h = OggHeaders::default();
            for p in stream.chunks(piece) {
                h.feed(p);
            }
            assert_eq!(
                h.headers(),
                (&head[..], 0, head.len() as u64),
                "piece {piece}"
            );
        }
        let mut h = OggHeaders::default();
        h.feed(&stream);
        let next = [page(true, 0, b"OpusHead2"), page(false, 0, b"OpusTags2")].concat();
        h.feed(&[b"junk".to_vec(), next.clone(), audio].concat());
        let (bytes, start, end) = h.headers();
        assert_eq!(bytes, &next[..]);
        assert_eq!(start, stream.len() as u64 + 4);
        assert_eq!(end, start + next.len() as u64);
        assert_eq!(
            ogg(&head),
            Some(Frame {
                len: 27 + 1 + 8,
                samples: 0,
                rate: 0
            })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Bias towards sync bytes so headers are actually parsed.
                    if seed.is_multiple_of(3) {
                        0xFF
                    } else {
                        (seed >> 8) as u8
                    }
                })
                .collect();
            let mut h = OggHeaders::default();
            h.feed(&bytes);
            for p in [mpeg as Parser, adts, ogg] {
                if let Some(i) = find_frame(&bytes, p) {
                    assert!(i < bytes.len());
                    assert!(p(&bytes[i..]).is_some_and(|f| f.len >= 4));
                }
            }
        }
    }
}

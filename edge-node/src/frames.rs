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

/// Cuts a byte stream into whole frames (or Ogg pages), for handing one stream over to another
/// mid-flight: a live DJ's bytes join the AutoDJ's at an arbitrary offset, and a DJ or an
/// encoder that stops ends wherever its last write did. Bytes before the first frame (or after
/// lost sync, up to the next frame) are dropped, a frame goes out only once it is complete, and
/// the incomplete tail left at the end is never sent, so listeners never get a partial frame
/// spliced into the stream.
#[derive(Debug)]
pub struct Framer {
    parse: Parser,
    buf: Vec<u8>,
    /// The buffer starts on a frame that followed a complete one (sync is established).
    synced: bool,
}

impl Framer {
    /// Gives up looking for a frame in this much data without one, keeping memory bounded.
    const MAX_PENDING: usize = 64 * 1024;
    /// The longest frame header: an Ogg page's, with a full segment table.
    const MAX_HEADER: usize = 27 + 255;

    pub fn new(parse: Parser) -> Framer {
        Framer {
            parse,
            buf: Vec::new(),
            synced: false,
        }
    }

    /// Feeds bytes; returns the whole frames they complete (empty when none).
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            if !self.synced {
                // Sync on a frame followed by another, as a listener's start does.
                match find_frame(rest, self.parse) {
                    Some(i) => {
                        let Some(f) = (self.parse)(&rest[i..]) else {
                            break;
                        };
                        if rest.len() < i + f.len + 4 {
                            at += i;
                            break; // the frame after it is not here yet
                        }
                        at += i;
                        self.synced = true;
                    }
                    None => {
                        // Keep what may be the start of a header still arriving.
                        at += rest.len().saturating_sub(Self::MAX_HEADER);
                        break;
                    }
                }
                continue;
            }
            match (self.parse)(rest) {
                Some(f) if rest.len() >= f.len => {
                    out.extend_from_slice(&rest[..f.len]);
                    at += f.len;
                }
                Some(_) => break,
                // Not enough of the header yet (an Ogg page's segment table is up to 255 bytes).
                None if rest.len() < 8
                    || (rest.starts_with(b"OggS") && rest.len() < Self::MAX_HEADER) =>
                {
                    break;
                }
                None => self.synced = false,
            }
        }
        self.buf.drain(..at);
        if self.buf.len() > Self::MAX_PENDING {
            self.buf.clear();
            self.synced = false;
        }
        out
    }

    /// Forgets a partial frame (the stream jumped): sync is looked for again.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.synced = false;
    }
}

/// Where a listener can start in an Ogg stream `b`: the first page found by [`find_frame`],
/// moved on past pages that begin with the tail of a packet from the page before. A decoder
/// starting on such a page sees half a packet; and when a chained link's remaining pages are all
/// such tails, it gets no audio of that link at all before the next link begins, which ffmpeg
/// then takes for a second, multiplexed stream.
pub fn find_ogg_start(b: &[u8]) -> Option<usize> {
    let mut i = find_frame(b, ogg)?;
    while b.get(i + 5).is_some_and(|flags| flags & 0x01 != 0) {
        i += ogg(&b[i..])?.len;
    }
    (i < b.len()).then_some(i)
}

/// Frames made up for tests.
#[cfg(test)]
pub(crate) mod test_frames {
    /// An MPEG-1 Layer III frame, 128 kbps, 44.1 kHz: 417 bytes (418 padded), 1152 samples,
    /// filled with `fill` after its header.
    pub(crate) fn mp3(pad: bool, fill: u8) -> Vec<u8> {
        let mut f = vec![0xFF, 0xFB, if pad { 0x92 } else { 0x90 }, 0x00];
        f.resize(if pad { 418 } else { 417 }, fill);
        f
    }

    /// An ADTS frame of `len` bytes, 44.1 kHz, 1024 samples.
    pub(crate) fn adts(len: usize) -> Vec<u8> {
        let mut f = vec![
            0xFF,
            0xF1,
            0x50,
            0x80 | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            ((len & 7) << 5) as u8 | 0x1F,
            0xFC,
        ];
        f.resize(len, 0x21);
        f
    }
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
        let h = test_frames::adts(len);
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
        let mut stream = vec![0x00, 0xFF, 0xFB, 0x90, 0x00, 0x42]; // a false sync, then garbage
        stream.extend(test_frames::mp3(false, 0x11));
        stream.extend(test_frames::mp3(true, 0x11));
        stream.extend(test_frames::mp3(false, 0x11));
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
    fn ogg_page_length_is_header_table_and_body() {
        let p = page(true, 0, b"OpusHead");
        assert_eq!(
            ogg(&p),
            Some(Frame {
                len: 27 + 1 + 8,
                samples: 0,
                rate: 0
            })
        );
        assert_eq!(ogg(&p[..27]), None, "segment table missing");
    }

    #[test]
    fn the_framer_waits_for_a_whole_ogg_page_header() {
        let pages = [
            page(true, 0, b"OpusHead"),
            page(false, 0, b"OpusTags"),
            page(false, 960, b"a"),
        ];
        let stream = pages.concat();
        let mut framer = Framer::new(ogg);
        let mut out = Vec::new();
        for piece in stream.chunks(10) {
            out.extend(framer.push(piece));
        }
        // The last page has no page after it to confirm sync but is whole: it goes out too.
        assert_eq!(out, stream);
    }

    #[test]
    fn ogg_listeners_start_on_a_page_that_begins_a_packet() {
        let mut continued = page(false, 7, b"tail");
        continued[5] = 0x01;
        let stream = [
            b"junk".to_vec(),
            continued.clone(),
            continued.clone(),
            page(false, 9, b"fresh"),
        ]
        .concat();
        assert_eq!(find_ogg_start(&stream), Some(4 + 2 * continued.len()));
        assert_eq!(find_ogg_start(&stream[..4 + 2 * continued.len()]), None);
    }

    #[test]
    fn the_framer_passes_whole_frames_only() {
        let frame = |pad: bool| {
            let mut f = vec![0xFF, 0xFB, if pad { 0x92 } else { 0x90 }, 0x00];
            f.resize(if pad { 418 } else { 417 }, 0x11);
            f
        };
        let frames = [frame(false), frame(true), frame(false), frame(true)].concat();
        // Joined mid-frame, fed in odd pieces, cut mid-frame at the end.
        let stream = &frames[200..frames.len() - 100];
        let mut framer = Framer::new(mpeg);
        let mut out = Vec::new();
        for piece in stream.chunks(97) {
            out.extend(framer.push(piece));
        }
        assert_eq!(out, [frame(true), frame(false)].concat());
        // After a jump, sync is found again on a frame followed by another: the frame followed
        // by garbage is dropped with the garbage.
        framer.reset();
        let mut out = framer.push(
            &[
                &frame(false)[300..],
                &frame(true)[..],
                b"xx",
                &frame(false)[..],
                &frame(true)[..],
            ]
            .concat(),
        );
        out.extend(framer.push(&frame(false)));
        assert_eq!(out, [frame(false), frame(true), frame(false)].concat());
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
            let mut h = crate::ogg::OggTracker::default();
            h.feed(&bytes);
            let _ = h.start_for(bytes.len() as u64 / 2, 0);
            for p in [mpeg as Parser, adts, ogg] {
                let mut framer = Framer::new(p);
                for piece in bytes.chunks(13) {
                    let out = framer.push(piece);
                    assert!(out.is_empty() || p(&out).is_some());
                }
            }
            if let Some(i) = find_ogg_start(&bytes) {
                assert!(ogg(&bytes[i..]).is_some());
            }
            for p in [mpeg as Parser, adts, ogg] {
                if let Some(i) = find_frame(&bytes, p) {
                    assert!(i < bytes.len());
                    assert!(p(&bytes[i..]).is_some_and(|f| f.len >= 4));
                }
            }
        }
    }
}

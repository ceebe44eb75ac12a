//! One mount's audio cut into HLS packed-audio segments (RFC 8216 §3.4): whole MP3 or AAC
//! (ADTS) frames in, segments out, each a raw `.mp3`/`.aac` file that starts with an ID3 tag
//! carrying the `com.apple.streaming.transportStreamTimestamp` PRIV frame (the 90 kHz time of
//! its first sample, continuous across segments) and the title in force as a TIT2 frame. A
//! segment is cut on a frame boundary before it would outgrow the target duration, and at a
//! title change, so each title starts a segment of its own; the playlist marks that segment
//! with an `EXT-X-DATERANGE` naming the title, and every segment with its
//! `EXT-X-PROGRAM-DATE-TIME`. A new source (or a fallback taking over) starts with an
//! `EXT-X-DISCONTINUITY`.
//!
//! Pure code: the wall clock comes in as an argument, and memory is bounded (the playlist
//! window plus a few segments for players that read the playlist just before it slid).

use crate::frames::{self, Framer, Parser};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// Segments kept beyond the window, for players that fetched the playlist just before it slid.
const EXTRA: usize = 3;
/// Longest title put into a segment's ID3 tag and the playlist, in bytes.
const MAX_TITLE: usize = 512;
/// The owner of the PRIV frame Apple's packed-audio timestamps use.
const TIMESTAMP_OWNER: &[u8] = b"com.apple.streaming.transportStreamTimestamp\0";

/// The codecs packed audio carries here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Mp3,
    Aac,
}

impl Codec {
    /// The codec of a source's Content-Type; None for Ogg and anything unknown.
    pub(crate) fn of(content_type: &str) -> Option<Codec> {
        if frames::is_ogg(content_type) {
            return None;
        }
        let ct = content_type.to_ascii_lowercase();
        if ct.contains("mpeg") || ct.contains("mp3") {
            Some(Codec::Mp3)
        } else if ct.contains("aac") {
            Some(Codec::Aac)
        } else {
            None
        }
    }

    fn parser(self) -> Parser {
        match self {
            Codec::Mp3 => frames::mpeg,
            Codec::Aac => frames::adts,
        }
    }

    /// The segments' file extension (players and ffmpeg pick the demuxer by it).
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Codec::Mp3 => "mp3",
            Codec::Aac => "aac",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Codec::Mp3 => "audio/mpeg",
            Codec::Aac => "audio/aac",
        }
    }
}

/// A finished segment; it never changes once listed.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub seq: u64,
    pub codec: Codec,
    /// The ID3 tag, then whole frames.
    pub data: Bytes,
    pub duration_ns: u64,
    /// Wall-clock time of its first sample.
    pub pdt: SystemTime,
    /// The first segment after a change of source.
    pub discontinuity: bool,
    /// The title in force at its first frame.
    pub title: String,
}

/// The segment being filled.
#[derive(Debug)]
struct Building {
    frames: Vec<u8>,
    duration_ns: u64,
    start_ns: u64,
    pdt: SystemTime,
    title: String,
    discontinuity: bool,
}

/// What is on the mount, as far as the packer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Feed {
    /// Nothing plays.
    Silent,
    /// A source of this codec plays.
    Packing(Codec),
    /// A source whose format packed audio cannot carry (Ogg): its Content-Type.
    Unsupported(String),
}

#[derive(Debug)]
pub(crate) struct Packer {
    target_ns: u64,
    window: usize,
    feed: Feed,
    framer: Option<Framer>,
    building: Option<Building>,
    segments: VecDeque<Segment>,
    next_seq: u64,
    /// Discontinuities of segments that left memory (for `EXT-X-DISCONTINUITY-SEQUENCE`).
    dropped_discontinuities: u64,
    /// Media time packed so far, over every source: the timestamps' timeline.
    media_ns: u64,
    /// A wall-clock time and the media time it belongs to.
    anchor: Option<(SystemTime, u64)>,
    /// The next segment starts after a change of source.
    discontinuity: bool,
}

impl Packer {
    /// A packer cutting segments of at most `target`, listing `window` of them, numbering
    /// from `first_seq`.
    pub(crate) fn new(target: Duration, window: usize, first_seq: u64) -> Packer {
        Packer {
            target_ns: u64::try_from(target.as_nanos()).unwrap_or(u64::MAX),
            window: window.max(1),
            feed: Feed::Silent,
            framer: None,
            building: None,
            segments: VecDeque::new(),
            next_seq: first_seq,
            dropped_discontinuities: 0,
            media_ns: 0,
            anchor: None,
            discontinuity: false,
        }
    }

    pub(crate) fn feed(&self) -> &Feed {
        &self.feed
    }

    /// A source (of `content_type`) starts feeding: what was being built is finished, and the
    /// next segment starts with a discontinuity.
    pub(crate) fn begin(&mut self, content_type: &str) {
        self.finish();
        if !self.segments.is_empty() {
            self.discontinuity = true;
        }
        match Codec::of(content_type) {
            Some(c) => {
                self.feed = Feed::Packing(c);
                self.framer = Some(Framer::new(c.parser()));
            }
            None => {
                self.feed = Feed::Unsupported(content_type.to_string());
                self.framer = None;
            }
        }
    }

    /// Nothing plays any more: the segment being built is finished.
    pub(crate) fn end(&mut self) {
        self.finish();
        self.feed = Feed::Silent;
        self.framer = None;
        self.discontinuity = !self.segments.is_empty();
    }

    /// Packs `data` (any slice of the source's bytes, in order) heard at `now` while `title`
    /// was in force; returns how many segments it completed.
    pub(crate) fn push(&mut self, data: &[u8], title: &str, now: SystemTime) -> usize {
        let (Feed::Packing(codec), Some(framer)) = (&self.feed, self.framer.as_mut()) else {
            return 0;
        };
        let codec = *codec;
        let whole = framer.push(data);
        let parse = codec.parser();
        let before = self.next_seq;
        let mut at = 0;
        while let Some(f) = whole.get(at..).and_then(parse) {
            let Some(frame) = whole.get(at..at + f.len) else {
                break;
            };
            self.add(codec, frame, f.duration_ns(), title, now);
            at += f.len;
        }
        usize::try_from(self.next_seq - before).unwrap_or(0)
    }

    fn add(&mut self, codec: Codec, frame: &[u8], duration_ns: u64, title: &str, now: SystemTime) {
        let title = clip(title);
        if let Some(b) = &self.building
            && (b.duration_ns + duration_ns > self.target_ns || b.title != title)
        {
            self.finish_as(codec);
        }
        if self.building.is_none() {
            let pdt = self.pdt(now);
            self.building = Some(Building {
                frames: Vec::with_capacity(64 * 1024),
                duration_ns: 0,
                start_ns: self.media_ns,
                pdt,
                title: title.to_string(),
                discontinuity: std::mem::take(&mut self.discontinuity),
            });
        }
        if let Some(b) = &mut self.building {
            b.frames.extend_from_slice(frame);
            b.duration_ns += duration_ns;
        }
        self.media_ns += duration_ns;
    }

    /// The wall-clock time of the sample at the current media time: the anchor carried on by
    /// media time while it stays within a target duration of the clock, else the clock (a
    /// source that ran slow or fast, or a gap).
    fn pdt(&mut self, now: SystemTime) -> SystemTime {
        if let Some((t0, m0)) = self.anchor {
            let at = t0 + Duration::from_nanos(self.media_ns - m0);
            let drift = match at.duration_since(now) {
                Ok(d) => d,
                Err(e) => e.duration(),
            };
            if drift.as_nanos() <= u128::from(self.target_ns) {
                return at;
            }
        }
        self.anchor = Some((now, self.media_ns));
        now
    }

    fn finish(&mut self) {
        if let Feed::Packing(codec) = self.feed {
            self.finish_as(codec);
        }
    }

    fn finish_as(&mut self, codec: Codec) {
        let Some(b) = self.building.take() else {
            return;
        };
        if b.frames.is_empty() {
            return;
        }
        let mut data = id3(pts_90k(b.start_ns), &b.title);
        data.extend_from_slice(&b.frames);
        self.segments.push_back(Segment {
            seq: self.next_seq,
            codec,
            data: Bytes::from(data),
            duration_ns: b.duration_ns,
            pdt: b.pdt,
            discontinuity: b.discontinuity,
            title: b.title,
        });
        self.next_seq += 1;
        while self.segments.len() > self.window + EXTRA {
            if let Some(old) = self.segments.pop_front()
                && old.discontinuity
            {
                self.dropped_discontinuities += 1;
            }
        }
    }

    /// A segment still held.
    pub(crate) fn segment(&self, seq: u64) -> Option<&Segment> {
        let first = self.segments.front()?.seq;
        let idx = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.segments.get(idx)
    }

    /// The media playlist of the newest `window` segments, each segment URI followed by
    /// `query`; None before the first segment.
    pub(crate) fn playlist(&self) -> Option<String> {
        let skip = self.segments.len().saturating_sub(self.window);
        let listed = self.segments.iter().skip(skip);
        let first = self.segments.get(skip)?;
        let discontinuity_seq = self.dropped_discontinuities
            + self
                .segments
                .iter()
                .take(skip)
                .filter(|s| s.discontinuity)
                .count() as u64;
        let target_s = self.target_ns.div_ceil(1_000_000_000).max(1);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target_s}\n\
             #EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_seq}\n",
            first.seq
        );
        let mut previous_title = skip
            .checked_sub(1)
            .and_then(|i| self.segments.get(i))
            .map(|s| s.title.as_str());
        for s in listed {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let pdt = iso8601(s.pdt);
            out.push_str(&format!("#EXT-X-PROGRAM-DATE-TIME:{pdt}\n"));
            if !s.title.is_empty() && previous_title != Some(s.title.as_str()) {
                out.push_str(&format!(
                    "#EXT-X-DATERANGE:ID=\"title-{}\",CLASS=\"com.onda.title\",START-DATE=\"{pdt}\",X-TITLE=\"{}\"\n",
                    s.seq,
                    quoted(&s.title)
                ));
            }
            previous_title = Some(s.title.as_str());
            let secs = s.duration_ns as f64 / 1e9;
            out.push_str(&format!(
                "#EXTINF:{secs:.3},{}\n{}.{}\n",
                one_line(&s.title),
                s.seq,
                s.codec.extension()
            ));
        }
        Some(out)
    }
}

/// A title cut to [`MAX_TITLE`] bytes on a character boundary.
fn clip(title: &str) -> &str {
    if title.len() <= MAX_TITLE {
        return title;
    }
    let mut end = MAX_TITLE;
    while !title.is_char_boundary(end) {
        end -= 1;
    }
    &title[..end]
}

/// A title inside a quoted playlist attribute: no double quote, no line break.
fn quoted(title: &str) -> String {
    title
        .chars()
        .map(|c| if c == '"' { '\'' } else { c })
        .filter(|c| !c.is_control())
        .collect()
}

/// A title after `#EXTINF:…,`: one line.
fn one_line(title: &str) -> String {
    title.chars().filter(|c| !c.is_control()).collect()
}

/// `2026-12-05T15:04:05.123Z`.
fn iso8601(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    jiff::Timestamp::from_millisecond(ms)
        .map(|ts| format!("{ts:.3}"))
        .unwrap_or_default()
}

/// Media time as an MPEG-2 presentation timestamp: 90 kHz, 33 bits.
fn pts_90k(media_ns: u64) -> u64 {
    let ticks = u128::from(media_ns) * 9 / 100_000;
    u64::try_from(ticks & ((1 << 33) - 1)).unwrap_or(0)
}

/// An ID3v2.4 size: 28 bits, 7 per byte.
fn syncsafe(n: usize) -> [u8; 4] {
    let n = u32::try_from(n).unwrap_or(0x0FFF_FFFF) & 0x0FFF_FFFF;
    [
        (n >> 21) as u8 & 0x7F,
        (n >> 14) as u8 & 0x7F,
        (n >> 7) as u8 & 0x7F,
        n as u8 & 0x7F,
    ]
}

fn id3_frame(out: &mut Vec<u8>, id: &[u8; 4], body: &[&[u8]]) {
    let len: usize = body.iter().map(|b| b.len()).sum();
    out.extend_from_slice(id);
    out.extend_from_slice(&syncsafe(len));
    out.extend_from_slice(&[0, 0]);
    for b in body {
        out.extend_from_slice(b);
    }
}

/// The ID3v2.4 tag a segment starts with: the PRIV timestamp, and the title (TIT2, UTF-8)
/// when there is one.
pub(crate) fn id3(pts: u64, title: &str) -> Vec<u8> {
    let mut frames = Vec::with_capacity(80 + title.len());
    id3_frame(&mut frames, b"PRIV", &[TIMESTAMP_OWNER, &pts.to_be_bytes()]);
    if !title.is_empty() {
        id3_frame(&mut frames, b"TIT2", &[&[3], title.as_bytes()]);
    }
    let mut tag = Vec::with_capacity(10 + frames.len());
    tag.extend_from_slice(b"ID3\x04\x00\x00");
    tag.extend_from_slice(&syncsafe(frames.len()));
    tag.extend_from_slice(&frames);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::frames::test_frames::{adts as adts_frame, mp3 as mp3_frame};

    /// The ID3 tag at the start of `data`: (its length, PRIV timestamp, TIT2 text).
    fn read_id3(data: &[u8]) -> (usize, u64, Option<String>) {
        assert_eq!(&data[..6], b"ID3\x04\x00\x00");
        let size = |b: &[u8]| {
            b.iter()
                .fold(0usize, |acc, &x| (acc << 7) | usize::from(x & 0x7F))
        };
        let total = 10 + size(&data[6..10]);
        let (mut at, mut pts, mut title) = (10, None, None);
        while at + 10 <= total {
            let id = &data[at..at + 4];
            let len = size(&data[at + 4..at + 8]);
            let body = &data[at + 10..at + 10 + len];
            match id {
                b"PRIV" => {
                    assert!(body.starts_with(TIMESTAMP_OWNER));
                    let ts: [u8; 8] = body[TIMESTAMP_OWNER.len()..].try_into().expect("8 bytes");
                    pts = Some(u64::from_be_bytes(ts));
                }
                b"TIT2" => {
                    assert_eq!(body[0], 3, "UTF-8");
                    title = Some(String::from_utf8(body[1..].to_vec()).expect("UTF-8"));
                }
                other => panic!("unexpected frame {other:?}"),
            }
            at += 10 + len;
        }
        (total, pts.expect("a PRIV timestamp"), title)
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000)
    }

    #[test]
    fn segments_are_whole_frames_within_the_target_with_a_continuous_timestamp() {
        let mut p = Packer::new(Duration::from_secs(2), 4, 0);
        p.begin("audio/mpeg");
        // 200 frames (about 5.2 s), fed in odd slices starting mid-frame.
        let stream: Vec<u8> = (0..200)
            .flat_map(|i| mp3_frame(i % 3 == 0, i as u8))
            .collect();
        let mut made = 0;
        for (i, piece) in stream[100..].chunks(1000).enumerate() {
            let now = t0() + Duration::from_millis(i as u64 * 60);
            made += p.push(piece, "Artist - Song", now);
        }
        // The first (cut) frame is dropped; 2 s holds 76 frames of 26.12 ms.
        assert_eq!(made, 2);
        let (a, b) = (p.segment(0).expect("0"), p.segment(1).expect("1"));
        for s in [a, b] {
            assert_eq!(s.duration_ns, 76 * (1152 * 1_000_000_000 / 44_100));
            assert!(s.duration_ns <= 2_000_000_000);
            let (tag, _, title) = read_id3(&s.data);
            assert_eq!(title.as_deref(), Some("Artist - Song"));
            // Frames only after the tag, each starting with a header.
            let mut at = tag;
            let mut n = 0;
            while at < s.data.len() {
                let f = frames::mpeg(&s.data[at..]).expect("a frame header");
                at += f.len;
                n += 1;
            }
            assert_eq!((at, n), (s.data.len(), 76));
        }
        let pts = |s: &Segment| read_id3(&s.data).1;
        assert_eq!(pts(a), 0);
        assert_eq!(pts(b), pts_90k(a.duration_ns));
        assert_eq!(
            b.pdt.duration_since(a.pdt).expect("later"),
            Duration::from_nanos(a.duration_ns),
            "program date-time runs on media time"
        );
    }

    #[test]
    fn a_title_change_starts_a_segment_with_the_new_title_and_a_daterange() {
        let mut p = Packer::new(Duration::from_secs(4), 6, 0);
        p.begin("audio/aac");
        let frame = adts_frame(300);
        for _ in 0..20 {
            p.push(&frame, "One", t0());
        }
        for _ in 0..20 {
            p.push(&frame, "Two \"quoted\"", t0() + Duration::from_millis(470));
        }
        // Ending finishes the segment being built.
        p.end();
        let (a, b) = (p.segment(0).expect("0"), p.segment(1).expect("1"));
        assert_eq!(read_id3(&a.data).2.as_deref(), Some("One"));
        assert_eq!(read_id3(&b.data).2.as_deref(), Some("Two \"quoted\""));
        assert_eq!(a.codec, Codec::Aac);
        let list = p.playlist().expect("a playlist");
        assert_eq!(list.matches("#EXT-X-DATERANGE").count(), 2, "{list}");
        assert!(list.contains("X-TITLE=\"Two 'quoted'\""), "{list}");
        assert!(
            list.contains("\n0.aac\n") && list.contains("\n1.aac\n"),
            "{list}"
        );
        assert_eq!(list.matches("#EXT-X-PROGRAM-DATE-TIME:2026-").count(), 2);
    }

    #[test]
    fn a_new_source_is_a_discontinuity_and_the_window_slides() {
        let frames: Vec<u8> = (0..400).flat_map(|i| mp3_frame(false, i as u8)).collect();
        let run = |window| {
            let mut p = Packer::new(Duration::from_secs(1), window, 0);
            p.begin("audio/mpeg");
            p.push(&frames, "", t0());
            p.begin("audio/mpeg");
            p.push(&frames, "", t0() + Duration::from_secs(10));
            p.end();
            p
        };
        // 400 frames are 10.4 s: 10 full segments of 38 frames and a short one, twice.
        let all = run(30);
        let second = all.segment(11).expect("11");
        assert!(second.discontinuity);
        assert_eq!(
            read_id3(&second.data).1,
            pts_90k(frames::mpeg(&frames).expect("frame").duration_ns() * 400),
            "the timestamp runs on across sources"
        );
        let list = all.playlist().expect("a playlist");
        assert_eq!(list.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{list}");
        assert!(list.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{list}");
        let p = run(2);
        let list = p.playlist().expect("a playlist");
        assert!(list.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n"));
        assert!(list.contains("#EXT-X-MEDIA-SEQUENCE:20\n"), "{list}");
        assert!(list.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{list}");
        assert_eq!(list.matches("#EXTINF").count(), 2);
        assert!(
            !list.contains("#EXT-X-DATERANGE"),
            "no title, no date range"
        );
        assert!(
            p.segment(16).is_none(),
            "memory holds the window and a few more"
        );
        assert!(p.segment(17).is_some());
    }

    #[test]
    fn ogg_is_not_packed() {
        let mut p = Packer::new(Duration::from_secs(2), 4, 0);
        p.begin("application/ogg");
        assert_eq!(p.feed(), &Feed::Unsupported("application/ogg".into()));
        assert_eq!(p.push(&[0u8; 4096], "x", t0()), 0);
        assert!(p.playlist().is_none());
        assert_eq!(Codec::of("audio/aacp"), Some(Codec::Aac));
        assert_eq!(Codec::of("audio/ogg; codecs=opus"), None);
    }

    #[test]
    fn pts_wraps_at_33_bits_and_sizes_are_syncsafe() {
        assert_eq!(pts_90k(1_000_000_000), 90_000);
        let wrap_ns = (1u64 << 33) * 100_000 / 9;
        assert!(pts_90k(wrap_ns + 1_000_000_000) < 90_001);
        assert_eq!(syncsafe(200), [0, 0, 1, 72]);
        let long = "é".repeat(400);
        let (len, _, title) = read_id3(&id3(5, clip(&long)));
        assert_eq!(title.map(|t| t.len()), Some(512));
        assert!(len > 512);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_pack_into_whole_frames(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20_000),
            cut in 1usize..3000,
        ) {
            let mut p = Packer::new(Duration::from_millis(500), 3, 0);
            p.begin("audio/mpeg");
            for piece in data.chunks(cut) {
                p.push(piece, "t", t0());
            }
            p.end();
            for seq in 0..100 {
                if let Some(s) = p.segment(seq) {
                    let (tag, _, _) = read_id3(&s.data);
                    proptest::prop_assert!(frames::mpeg(&s.data[tag..]).is_some());
                    proptest::prop_assert!(s.duration_ns <= 500_000_000);
                }
            }
        }
    }
}

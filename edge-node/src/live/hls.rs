//! HLS from a live RTMP publish, in memory: FLV tags in, MPEG-TS segments cut at keyframes once
//! they reach the target duration, and a sliding-window media playlist. With low-latency HLS on
//! (`part_ms` > 0) each segment is also built as partial segments of at most `part_ms`, which
//! the playlist lists (`EXT-X-PART`) as they complete, with a preload hint for the next one.
//! Pure (no I/O): the RTMP session feeds it, the HTTP side reads it. Each completed part (or a
//! relay's whole segment) may be moved out of memory: the caller takes it to be written at its
//! offset in its segment's file (`to_store`) and says when it is (`stored`); from then on it is
//! read from that file (`Piece::File`), and the caller deletes the files of segments that left
//! the window (`take_evicted`). Only the part in progress has to stay in memory.

use super::flv::{self, AacConfig, Audio, AvcConfig, FlvError, Video};
use super::ts::{Frame, Muxer};
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::ops::Range;

/// PTS/DTS start this far above zero (90 kHz), so a negative composition offset stays positive.
const TS_OFFSET: u64 = 90_000;

/// Complete segments whose parts the playlist still lists (besides the one being built): more
/// than the part hold-back (3 part targets), which is less than one segment target.
const PARTS_LISTED: usize = 2;

/// A partial segment of a complete segment: a byte range of its data.
#[derive(Debug, Clone)]
pub struct PartInfo {
    pub duration_ms: u64,
    /// Starts with a keyframe (or carries audio only).
    pub independent: bool,
    range: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub seq: u64,
    pub duration_ms: u64,
    /// Its size in bytes.
    pub len: usize,
    /// Its bytes, one stretch per part (one for a relay's copy), in order.
    chunks: Vec<Chunk>,
    /// The first segment of a new publish (the timeline starts again).
    pub discontinuity: bool,
    /// Its partial segments, in order (empty without low-latency HLS, and in a relay's copy).
    pub parts: Vec<PartInfo>,
}

impl Segment {
    /// A whole segment (a relay's copy of the origin's), in memory.
    pub fn new(seq: u64, duration_ms: u64, data: Bytes, discontinuity: bool) -> Segment {
        Segment {
            seq,
            duration_ms,
            len: data.len(),
            chunks: vec![Chunk::new(0, data)],
            discontinuity,
            parts: Vec::new(),
        }
    }

    /// Some of its bytes were handed out to be written: it has (or will have) a file.
    fn has_file(&self) -> bool {
        self.chunks.iter().any(|c| !matches!(c.held, Held::New(_)))
    }
}

/// A stretch of a segment's bytes, from offset `at`, and where it is.
#[derive(Debug, Clone)]
struct Chunk {
    at: usize,
    len: usize,
    held: Held,
}

#[derive(Debug, Clone)]
enum Held {
    /// In memory, not yet handed out to be written.
    New(Bytes),
    /// In memory while it is being written.
    Writing(Bytes),
    /// In memory for good: writing it failed.
    Kept(Bytes),
    /// Only in the segment's file.
    Stored,
}

impl Chunk {
    fn new(at: usize, data: Bytes) -> Chunk {
        Chunk {
            at,
            len: data.len(),
            held: Held::New(data),
        }
    }

    fn bytes(&self) -> Option<&Bytes> {
        match &self.held {
            Held::New(b) | Held::Writing(b) | Held::Kept(b) => Some(b),
            Held::Stored => None,
        }
    }
}

/// Where a stretch of a segment's or part's bytes is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Bytes(Bytes),
    /// A byte range of the segment's file.
    File(Range<u64>),
}

/// A segment's or part's bytes: pieces, in order, of segment `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub seq: u64,
    pub pieces: Vec<Piece>,
}

impl Media {
    /// `range` of segment `seq`, whose bytes `chunks` hold: slices of the chunks in memory (a
    /// part is one slice) and ranges of the file for those written.
    fn of<'a>(seq: u64, chunks: impl IntoIterator<Item = &'a Chunk>, range: Range<usize>) -> Media {
        let mut pieces = Vec::new();
        for c in chunks {
            let (from, to) = (range.start.max(c.at), range.end.min(c.at + c.len));
            if from >= to {
                continue;
            }
            match c.bytes() {
                Some(b) => pieces.push(Piece::Bytes(b.slice(from - c.at..to - c.at))),
                None => match pieces.last_mut() {
                    Some(Piece::File(r)) if r.end == from as u64 => r.end = to as u64,
                    _ => pieces.push(Piece::File(from as u64..to as u64)),
                },
            }
        }
        Media { seq, pieces }
    }
}

/// A completed part of the segment being built.
#[derive(Debug)]
struct Part {
    chunk: Chunk,
    duration_ms: u64,
    independent: bool,
}

/// A completed part (or a relay's whole segment) to be written at `at` in segment `seq`'s file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToStore {
    pub seq: u64,
    pub at: u64,
    pub data: Bytes,
}

#[derive(Debug)]
struct Building {
    seq: u64,
    start_ms: u64,
    last_ms: u64,
    discontinuity: bool,
    parts: Vec<Part>,
    /// The part in progress.
    part: Vec<u8>,
    part_start_ms: u64,
    part_independent: bool,
    /// Parts of this segment are being cut shorter so that its last is not a sliver.
    balanced: bool,
}

/// A stream as a master playlist lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Peak bits per second over the segments held.
    pub bandwidth: u64,
    /// RFC 6381 codecs, when the configurations were seen.
    pub codecs: Option<String>,
}

/// Whether a blocking playlist request (`_HLS_msn`, `_HLS_part`) can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Now,
    Later,
    /// More than two segments ahead of the playlist: the client is wrong (400).
    TooFar,
}

/// What feeding one tag completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    pub segment: bool,
    pub part: bool,
}

#[derive(Debug)]
pub struct Segmenter {
    target_ms: u64,
    /// Partial segment target; 0: no low-latency HLS.
    part_ms: u64,
    window: usize,
    muxer: Muxer,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    current: Option<Building>,
    segments: VecDeque<Segment>,
    /// Stored segments that left the window, whose files are to be deleted.
    evicted: Vec<u64>,
    next_seq: u64,
    /// The publisher left: the playlist ends (until the next publish).
    ended: bool,
    discontinuity_next: bool,
    /// RTMP timestamps are 32-bit milliseconds; this extends them across a wrap.
    last_rtmp_ms: Option<u32>,
    epoch_ms: u64,
    /// The time of the previous point a part may be cut at, and the last few intervals
    /// between such points: a part is closed before the next frame could take it past the
    /// part target, judged by the longest recent interval (RTMP's whole milliseconds make
    /// 30 fps 33, 33, 34 ms).
    last_cut_point_ms: Option<u64>,
    recent_intervals: [u64; 4],
    /// The last keyframe and the interval before it: where the segment in progress will
    /// probably end (at the first keyframe past the target).
    last_keyframe_ms: Option<u64>,
    keyframe_interval_ms: Option<u64>,
    /// The longest part the frame timing allows (the last one closed at the part target).
    full_part_ms: Option<u64>,
    /// A relay's copy: whole segments pulled from the origin, so its playlist is plain HLS.
    relay_copy: bool,
}

impl Segmenter {
    pub fn new(target_ms: u64, part_ms: u64, window: usize) -> Segmenter {
        let target_ms = target_ms.max(100);
        Segmenter {
            target_ms,
            part_ms: if part_ms == 0 {
                0
            } else {
                part_ms.clamp(50, target_ms)
            },
            window: window.max(1),
            muxer: Muxer::default(),
            avc: None,
            aac: None,
            current: None,
            segments: VecDeque::new(),
            evicted: Vec::new(),
            next_seq: 0,
            ended: false,
            discontinuity_next: false,
            last_rtmp_ms: None,
            epoch_ms: 0,
            last_cut_point_ms: None,
            recent_intervals: [0; 4],
            last_keyframe_ms: None,
            keyframe_interval_ms: None,
            full_part_ms: None,
            relay_copy: false,
        }
    }

    /// A new segmenter (other settings) that goes on from `old`'s numbering, after a
    /// discontinuity, and keeps its segments, so players and relays never see the media
    /// sequence go back.
    pub fn replacing(old: Segmenter, target_ms: u64, part_ms: u64, window: usize) -> Segmenter {
        let mut s = Segmenter::new(target_ms, part_ms, window);
        s.next_seq = old.next_seq;
        s.segments = old.segments;
        s.evicted = old.evicted;
        s.trim();
        s.discontinuity_next = !s.segments.is_empty();
        s.ended = old.ended;
        s
    }

    /// The number the next segment gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Numbers the next segment at least `seq` (a rendition lines up with its source).
    pub fn continue_from(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// A new publisher: the configurations are learnt again and the next segment is marked as
    /// a discontinuity; segments of the previous publish stay in the window until they age out.
    pub fn restart(&mut self) {
        self.finish(None);
        self.avc = None;
        self.aac = None;
        self.ended = false;
        self.discontinuity_next = !self.segments.is_empty();
        self.last_rtmp_ms = None;
        self.epoch_ms = 0;
        self.last_cut_point_ms = None;
        self.recent_intervals = [0; 4];
        self.last_keyframe_ms = None;
        self.keyframe_interval_ms = None;
        self.full_part_ms = None;
        self.relay_copy = false;
    }

    /// The publisher left: the segment in progress is closed and the playlist ends.
    pub fn end(&mut self) {
        let last = self.current.as_ref().map(|c| c.last_ms);
        self.finish(last);
        self.ended = true;
    }

    fn time(&mut self, rtmp_ms: u32) -> u64 {
        if let Some(prev) = self.last_rtmp_ms
            && rtmp_ms < prev
            && prev - rtmp_ms > u32::MAX / 2
        {
            self.epoch_ms += 1 << 32;
        }
        self.last_rtmp_ms = Some(rtmp_ms);
        self.epoch_ms + u64::from(rtmp_ms)
    }

    /// Closes the part in progress at `end_ms`.
    fn close_part(b: &mut Building, end_ms: u64) {
        let mut data = std::mem::take(&mut b.part);
        // Held until written (or for good without a store): without the room it grew into
        // (up to twice its size), which the allocator shrinks in place.
        data.shrink_to_fit();
        let at = b.parts.last().map_or(0, |p| p.chunk.at + p.chunk.len);
        b.parts.push(Part {
            chunk: Chunk::new(at, Bytes::from(data)),
            duration_ms: end_ms.saturating_sub(b.part_start_ms).max(1),
            independent: b.part_independent,
        });
    }

    fn finish(&mut self, end_ms: Option<u64>) {
        let Some(mut b) = self.current.take() else {
            return;
        };
        let end = end_ms.unwrap_or(b.last_ms).max(b.start_ms);
        Self::close_part(&mut b, end);
        // The parts' chunks are the segment's bytes; each part is a range of them.
        let mut parts = Vec::with_capacity(b.parts.len());
        let mut chunks = Vec::with_capacity(b.parts.len());
        for p in b.parts {
            parts.push(PartInfo {
                duration_ms: p.duration_ms,
                independent: p.independent,
                range: p.chunk.at..p.chunk.at + p.chunk.len,
            });
            chunks.push(p.chunk);
        }
        self.segments.push_back(Segment {
            seq: b.seq,
            duration_ms: (end - b.start_ms).max(1),
            len: chunks.iter().map(|c| c.len).sum(),
            chunks,
            discontinuity: b.discontinuity,
            parts,
        });
        self.trim();
    }

    /// Keeps the window's length; a segment with a file leaving it is remembered for deletion.
    fn trim(&mut self) {
        while self.segments.len() > self.window {
            if let Some(s) = self.segments.pop_front()
                && s.has_file()
            {
                self.evicted.push(s.seq);
            }
        }
    }

    /// Every chunk, of the complete segments and the one being built, with its segment.
    fn chunks_mut(&mut self) -> impl Iterator<Item = (u64, &mut Chunk)> {
        let complete = self.segments.iter_mut().flat_map(|s| {
            let seq = s.seq;
            s.chunks.iter_mut().map(move |c| (seq, c))
        });
        let building = self.current.iter_mut().flat_map(|b| {
            let seq = b.seq;
            b.parts.iter_mut().map(move |p| (seq, &mut p.chunk))
        });
        complete.chain(building)
    }

    /// The completed parts (and relay segments) not yet handed out to be written, now handed
    /// out: each stays in memory until [`Segmenter::stored`] or [`Segmenter::store_failed`]
    /// says how it went.
    pub fn to_store(&mut self) -> Vec<ToStore> {
        let mut out = Vec::new();
        for (seq, c) in self.chunks_mut() {
            if let Held::New(b) = &c.held {
                let data = b.clone();
                c.held = Held::Writing(data.clone());
                out.push(ToStore {
                    seq,
                    at: c.at as u64,
                    data,
                });
            }
        }
        out
    }

    /// The chunk of segment `seq` at `at` is in the file: its memory goes. False when the
    /// segment already left the window (its file is then the caller's to delete).
    pub fn stored(&mut self, seq: u64, at: u64) -> bool {
        match self
            .chunks_mut()
            .find(|(s, c)| *s == seq && c.at as u64 == at)
        {
            Some((_, c)) => {
                c.held = Held::Stored;
                true
            }
            None => false,
        }
    }

    /// The chunk of segment `seq` at `at` could not be written: it stays in memory while its
    /// segment is in the window.
    pub fn store_failed(&mut self, seq: u64, at: u64) {
        if let Some((_, c)) = self
            .chunks_mut()
            .find(|(s, c)| *s == seq && c.at as u64 == at)
            && let Held::Writing(b) = &c.held
        {
            c.held = Held::Kept(b.clone());
        }
    }

    /// Segments with a file that left the window since the last call.
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }

    fn new_part(&mut self) -> Vec<u8> {
        // About the size of the last part, so it seldom grows (doubling) as it fills.
        let last = match self.current.as_ref() {
            Some(b) => b.parts.last().map(|p| p.chunk.len),
            None => self
                .segments
                .back()
                .and_then(|s| s.parts.last())
                .map(|p| p.range.len()),
        };
        let size = match last {
            Some(n) => n + n / 4,
            None if self.part_ms > 0 => 64 * 1024,
            None => 256 * 1024,
        };
        let mut part = Vec::with_capacity(size);
        // Tables start every part, so a player may join at any independent part.
        self.muxer
            .tables(&mut part, self.avc.is_some(), self.aac.is_some());
        part
    }

    fn start(&mut self, at_ms: u64) {
        let part = self.new_part();
        self.current = Some(Building {
            seq: self.next_seq,
            start_ms: at_ms,
            last_ms: at_ms,
            discontinuity: std::mem::take(&mut self.discontinuity_next),
            parts: Vec::new(),
            part,
            part_start_ms: at_ms,
            part_independent: true,
            balanced: false,
        });
        self.next_seq += 1;
    }

    /// At a point a segment or part may start (`keyframe`: a segment may start here; any video
    /// frame, or any audio frame without video, may start a part): closes the segment in
    /// progress once it reached the target and starts the next (or the first), else closes the
    /// part in progress when the next frame would take it past the part target.
    fn cut_point(&mut self, ms: u64, keyframe: bool) -> Cut {
        if let Some(prev) = self.last_cut_point_ms {
            self.recent_intervals.rotate_right(1);
            self.recent_intervals[0] = ms.saturating_sub(prev);
        }
        self.last_cut_point_ms = Some(ms);
        let interval = self.recent_intervals.iter().copied().max().unwrap_or(0);
        if keyframe {
            if let Some(prev) = self.last_keyframe_ms.filter(|p| ms > *p) {
                self.keyframe_interval_ms = Some(ms - prev);
            }
            self.last_keyframe_ms = Some(ms);
        }
        let segment_due = self
            .current
            .as_ref()
            .is_none_or(|c| ms.saturating_sub(c.start_ms) >= self.target_ms);
        if keyframe && segment_due {
            let closed = self.current.is_some();
            self.finish(Some(ms));
            self.start(ms);
            return Cut {
                segment: closed,
                part: closed,
            };
        }
        let Some(c) = self
            .current
            .as_ref()
            .filter(|c| self.part_ms > 0 && ms > c.part_start_ms)
        else {
            return Cut::default();
        };
        let length = ms - c.part_start_ms;
        // Full: the next frame would take the part past the target.
        let full = length + interval > self.part_ms;
        let goal = self.balanced_part(c, interval);
        // Balanced: this frame is the nearest to the part's share of the segment.
        let at_goal = goal.is_some_and(|g| length + interval / 2 >= g);
        if !full && !at_goal {
            return Cut::default();
        }
        if full {
            self.full_part_ms = Some(length);
        }
        let part = self.new_part();
        if let Some(b) = self.current.as_mut() {
            Self::close_part(b, ms);
            b.part = part;
            b.part_start_ms = ms;
            b.part_independent = keyframe;
            b.balanced |= goal.is_some();
        }
        Cut {
            segment: false,
            part: true,
        }
    }

    /// Where the segment in progress will probably end: at the first keyframe past its target,
    /// when keyframes come at a steady interval (the target itself before two were seen).
    fn expected_end(&self, b: &Building) -> u64 {
        let due = b.start_ms + self.target_ms;
        match (self.last_keyframe_ms, self.keyframe_interval_ms) {
            (Some(key), Some(gop)) if gop > 0 && key <= due => {
                key + (due - key).div_ceil(gop) * gop
            }
            _ => due,
        }
    }

    /// The length the part in progress should have, when cutting every part as long as the frame
    /// timing allows would leave the segment's last part shorter than half of one (a single
    /// frame, at 25 fps with 300 ms parts): what is left of the segment is then shared evenly
    /// among its parts. hls.js estimates how many parts to skip ahead by the part target, and a
    /// one-frame part at the end of every segment trips it. The shares may fall below the 85 %
    /// of the target that LL-HLS asks of parts other than a segment's last (240 of 300 ms in that
    /// example): the frame timing leaves no way to meet both. `None`: parts as long as allowed.
    fn balanced_part(&self, b: &Building, interval: u64) -> Option<u64> {
        let full = self.full_part_ms.filter(|f| *f > 0)?;
        let left = self
            .expected_end(b)
            .checked_sub(b.part_start_ms)
            .filter(|l| *l > full)?;
        // Parts of full length from here, and the last one, what remains.
        let parts = left.saturating_sub(interval / 2).div_ceil(full);
        if parts < 2 {
            return None;
        }
        let last = left.saturating_sub((parts - 1) * full);
        (b.balanced || last < full / 2).then(|| left / parts)
    }

    /// Feeds one video tag body.
    pub fn video(&mut self, rtmp_ms: u32, tag: &Bytes) -> Result<Cut, FlvError> {
        let ms = self.time(rtmp_ms);
        match flv::parse_video(tag, self.avc.as_ref())? {
            Video::Config(c) => {
                self.avc = Some(c);
                Ok(Cut::default())
            }
            Video::Skip => Ok(Cut::default()),
            Video::Frame {
                keyframe,
                cts,
                nalus,
            } => {
                if self.avc.is_none() {
                    return Err(FlvError::NoAvcConfig);
                }
                // Frames before the first keyframe cannot be decoded: skip them.
                if self.current.is_none() && !keyframe {
                    return Ok(Cut::default());
                }
                let cut = self.cut_point(ms, keyframe);
                let (Some(avc), Some(cur)) = (self.avc.as_ref(), self.current.as_mut()) else {
                    return Ok(cut);
                };
                let au = flv::annex_b(avc, keyframe, &nalus);
                let dts = TS_OFFSET + ms * 90;
                let pts = dts.saturating_add_signed(i64::from(cts) * 90);
                cur.last_ms = cur.last_ms.max(ms);
                self.muxer.pes(
                    &mut cur.part,
                    &Frame {
                        video: true,
                        pts,
                        dts: Some(dts),
                        pcr: Some(dts),
                        random_access: keyframe,
                        data: &au,
                    },
                );
                Ok(cut)
            }
        }
    }

    /// Feeds one audio tag body; an audio-only stream cuts its segments and parts here.
    pub fn audio(&mut self, rtmp_ms: u32, tag: &Bytes) -> Result<Cut, FlvError> {
        let ms = self.time(rtmp_ms);
        match flv::parse_audio(tag)? {
            Audio::Config(c) => {
                self.aac = Some(c);
                Ok(Cut::default())
            }
            Audio::Frame(f) => {
                let Some(aac) = self.aac else {
                    return Err(FlvError::NoAacConfig);
                };
                let cut = if self.avc.is_none() {
                    self.cut_point(ms, true)
                } else {
                    Cut::default()
                };
                let Some(cur) = self.current.as_mut() else {
                    return Ok(cut);
                };
                let pts = TS_OFFSET + ms * 90;
                cur.last_ms = cur.last_ms.max(ms);
                // Without video the audio carries the PCR.
                let pcr = self.avc.is_none().then_some(pts);
                let adts = flv::adts(&aac, &f);
                self.muxer.pes(
                    &mut cur.part,
                    &Frame {
                        video: false,
                        pts,
                        dts: None,
                        pcr,
                        random_access: false,
                        data: &adts,
                    },
                );
                Ok(cut)
            }
        }
    }

    /// A relay's copy: a segment pulled from the origin, kept in order in the window. A copy
    /// has whole segments only, so its playlist is plain HLS.
    pub fn push(&mut self, segment: Segment) {
        // Never beside a publish (a stream that became the origin while a pull was under way):
        // its segments would share numbers, and so files, with the pushed ones.
        if self.current.is_some() || self.segments.iter().any(|s| s.seq >= segment.seq) {
            return;
        }
        self.relay_copy = true;
        self.next_seq = segment.seq + 1;
        self.segments.push_back(segment);
        self.trim();
    }

    /// A relay's copy: whether the origin's playlist has ended.
    pub fn set_ended(&mut self, ended: bool) {
        self.ended = ended;
    }

    /// The sequence number of the newest segment held.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments.back().map(|s| s.seq)
    }

    pub fn target(&self) -> u64 {
        self.target_ms
    }

    pub fn part_target(&self) -> u64 {
        self.part_ms
    }

    /// Parts are made and listed (not a relay's copy).
    fn low_latency(&self) -> bool {
        self.part_ms > 0 && !self.relay_copy
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Segment `seq` and its duration.
    pub fn segment(&self, seq: u64) -> Option<(Media, u64)> {
        self.segments
            .iter()
            .find(|s| s.seq == seq)
            .map(|s| (Media::of(seq, &s.chunks, 0..s.len), s.duration_ms))
    }

    /// Part `idx` of segment `seq` and its duration, once complete.
    pub fn part(&self, seq: u64, idx: usize) -> Option<(Media, u64)> {
        if let Some(b) = self.current.as_ref().filter(|b| b.seq == seq) {
            let p = b.parts.get(idx)?;
            let range = p.chunk.at..p.chunk.at + p.chunk.len;
            return Some((Media::of(seq, [&p.chunk], range), p.duration_ms));
        }
        let s = self.segments.iter().find(|s| s.seq == seq)?;
        let p = s.parts.get(idx)?;
        Some((Media::of(seq, &s.chunks, p.range.clone()), p.duration_ms))
    }

    /// Whether part `idx` of segment `seq` is the one being built now (the preload hint).
    pub fn part_pending(&self, seq: u64, idx: usize) -> bool {
        !self.ended
            && self.low_latency()
            && self
                .current
                .as_ref()
                .is_some_and(|b| b.seq == seq && b.parts.len() == idx)
    }

    /// Whether the playlist holds segment `msn` (with `part`: its part `part`, or anything
    /// later), for a blocking playlist reload.
    pub fn ready(&self, msn: u64, part: Option<u64>) -> Ready {
        if self.ended {
            return Ready::Now;
        }
        let Some(last) = self.last_seq() else {
            return Ready::Later;
        };
        if msn > last + 2 {
            return Ready::TooFar;
        }
        let part = part.filter(|_| self.low_latency());
        let Some(part) = part else {
            return if msn <= last {
                Ready::Now
            } else {
                Ready::Later
            };
        };
        // The newest part listed.
        let newest = match self.current.as_ref().filter(|b| !b.parts.is_empty()) {
            Some(b) => (b.seq, b.parts.len() as u64 - 1),
            None => {
                let s = self.segments.back().map_or(0, |s| s.parts.len());
                (last, (s as u64).saturating_sub(1))
            }
        };
        if (msn, part) <= newest {
            Ready::Now
        } else if msn == newest.0 && part >= newest.1 + 3 {
            // Three or more parts past the newest one (the spec's Advance Part Limit).
            Ready::TooFar
        } else {
            Ready::Later
        }
    }

    /// What a master playlist says of this stream; None before its first segment.
    pub fn variant(&self) -> Option<Variant> {
        let bandwidth = self
            .segments
            .iter()
            .map(|s| s.len as u64 * 8000 / s.duration_ms.max(1))
            .max()?;
        let video = self
            .avc
            .as_ref()
            .and_then(|c| c.sps.first())
            .and_then(|sps| {
                let b = sps.get(1..4)?;
                Some(format!("avc1.{:02x}{:02x}{:02x}", b[0], b[1], b[2]))
            });
        let audio = self.aac.map(|c| format!("mp4a.40.{}", c.object_type));
        let codecs: Vec<String> = video.into_iter().chain(audio).collect();
        Some(Variant {
            bandwidth,
            codecs: (!codecs.is_empty()).then(|| codecs.join(",")),
        })
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The media playlist; None until the first segment is complete. `query` (with its `?`)
    /// is appended to every segment and part URI.
    pub fn playlist(&self, query: &str) -> Option<String> {
        let first = self.segments.front()?;
        let longest = self
            .segments
            .iter()
            .map(|s| s.duration_ms)
            .max()
            .unwrap_or(0);
        let target = longest.max(self.target_ms).div_ceil(1000);
        let ll = self.low_latency();
        let mut out = String::with_capacity(4096);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{target}\n",
            if ll { 6 } else { 3 }
        );
        if ll {
            let _ = write!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}\n\
                 #EXT-X-PART-INF:PART-TARGET={}\n",
                secs(3 * self.part_ms),
                secs(self.part_ms)
            );
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.seq);
        let listed_from = self.segments.len().saturating_sub(PARTS_LISTED);
        for (i, s) in self.segments.iter().enumerate() {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            // An ended playlist is played by whole segments.
            if ll && !self.ended && i >= listed_from {
                for (n, p) in s.parts.iter().enumerate() {
                    part_line(&mut out, s.seq, n, p.duration_ms, p.independent, query);
                }
            }
            let _ = write!(
                out,
                "#EXTINF:{},\n{}.ts{query}\n",
                secs(s.duration_ms),
                s.seq
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        } else if ll && let Some(b) = &self.current {
            if b.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            for (n, p) in b.parts.iter().enumerate() {
                part_line(&mut out, b.seq, n, p.duration_ms, p.independent, query);
            }
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.{}.ts{query}\"",
                b.seq,
                b.parts.len()
            );
        }
        Some(out)
    }
}

/// Milliseconds as decimal seconds, as playlists write durations.
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn part_line(out: &mut String, seq: u64, n: usize, ms: u64, independent: bool, query: &str) {
    let _ = writeln!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"{seq}.{n}.ts{query}\"{}",
        secs(ms),
        if independent { ",INDEPENDENT=YES" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_memory(m: Media) -> Bytes {
        let mut out = Vec::new();
        for p in m.pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(&b),
                Piece::File(r) => panic!("segment {} has {r:?} in its file", m.seq),
            }
        }
        Bytes::from(out)
    }

    /// 2 s segments of 500 ms parts from 25 fps video, `secs` long.
    fn published(window: usize, secs: u32) -> Segmenter {
        let mut s = Segmenter::new(2000, 500, window);
        let (v, _) = config_tags();
        s.video(0, &v).expect("avc config");
        for i in 0..=secs * 25 {
            s.video(i * 40, &frame(i % 50 == 0)).expect("video");
        }
        s
    }

    #[test]
    fn media_is_slices_of_the_chunks_in_memory_and_ranges_of_the_file_for_the_rest() {
        let mut chunks = vec![
            Chunk::new(0, Bytes::from_static(b"abc")),
            Chunk::new(3, Bytes::from_static(b"defg")),
            Chunk::new(7, Bytes::from_static(b"h")),
            Chunk::new(8, Bytes::from_static(b"ij")),
        ];
        let m = |chunks: &[Chunk], r: Range<usize>| Media::of(9, chunks, r).pieces;
        assert_eq!(
            m(&chunks, 3..7),
            [Piece::Bytes(Bytes::from_static(b"defg"))]
        );
        assert_eq!(m(&chunks, 4..6), [Piece::Bytes(Bytes::from_static(b"ef"))]);
        chunks[1].held = Held::Stored;
        chunks[2].held = Held::Stored;
        assert_eq!(
            m(&chunks, 1..9),
            [
                Piece::Bytes(Bytes::from_static(b"bc")),
                Piece::File(3..8),
                Piece::Bytes(Bytes::from_static(b"i")),
            ]
        );
        assert_eq!(m(&chunks, 4..5), [Piece::File(4..5)]);
        assert_eq!(m(&chunks, 10..10), []);
    }

    /// A relay's push never lands beside a publish: the numbers (and files) would collide.
    #[test]
    fn pushes_are_refused_while_a_segment_is_being_built() {
        let mut s = published(6, 4);
        let before: Vec<u64> = s.segments().map(|x| x.seq).collect();
        let next = s.next_seq();
        s.push(Segment::new(
            next,
            2000,
            Bytes::from_static(&[0x47; 188]),
            false,
        ));
        s.push(Segment::new(
            next - 1,
            2000,
            Bytes::from_static(&[0x47; 188]),
            false,
        ));
        assert_eq!(s.segments().map(|x| x.seq).collect::<Vec<_>>(), before);
        assert!(
            s.playlist("")
                .expect("playlist")
                .contains("#EXT-X-PART-INF")
        );
    }

    /// Completed parts are handed out once to be written at their offsets, served from memory
    /// until written and from the file after, alone or mixed with parts still in memory; a
    /// failed write keeps a part in memory; a segment with a file that leaves the window is
    /// reported once, and a write finishing after that says so.
    #[test]
    fn parts_are_read_from_the_file_once_written_and_evicted_segments_reported() {
        let mut s = published(3, 6);
        let seqs: Vec<u64> = s.segments().map(|x| x.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        let handed = s.to_store();
        let parts: usize = s.segments().map(|x| x.parts.len()).sum();
        assert_eq!(
            handed.len(),
            parts,
            "each part once: {:?}",
            handed.iter().map(|h| (h.seq, h.at)).collect::<Vec<_>>()
        );
        assert!(handed.iter().all(|h| h.seq < 3));
        assert!(s.to_store().is_empty(), "each part is handed out once");
        let of = |seq: u64| handed.iter().filter(move |h| h.seq == seq);
        let whole: Vec<u8> = of(1).flat_map(|h| h.data.to_vec()).collect();
        assert_eq!(in_memory(s.segment(1).expect("segment 1").0), whole);
        for h in of(1) {
            assert!(s.stored(1, h.at));
        }
        let media = s.segment(1).expect("segment 1").0;
        assert_eq!(media.pieces, [Piece::File(0..whole.len() as u64)]);
        let p = s.segments().nth(1).expect("segment 1").parts[1].clone();
        let part = s.part(1, 1).expect("part 1.1").0;
        assert_eq!(
            part.pieces,
            [Piece::File(p.range.start as u64..p.range.end as u64)]
        );
        let first_of_2 = of(2).next().expect("a part of 2");
        assert!(s.stored(2, first_of_2.at));
        let second_of_2 = of(2).nth(1).expect("a part of 2");
        s.store_failed(2, second_of_2.at);
        let media = s.segment(2).expect("segment 2").0;
        let parts_of_2 = s.segments().nth(2).expect("segment 2").parts.len();
        assert_eq!(
            media.pieces.len(),
            parts_of_2,
            "one file range, then a piece per part"
        );
        assert_eq!(
            media.pieces[0],
            Piece::File(0..first_of_2.data.len() as u64)
        );
        assert_eq!(media.pieces[1], Piece::Bytes(second_of_2.data.clone()));
        // The segment being built: its completed parts too.
        for i in 151..=170u32 {
            s.video(i * 40, &frame(i % 50 == 0)).expect("video");
        }
        let building = s.to_store();
        assert!(!building.is_empty() && building.iter().all(|h| h.seq == 3));
        assert!(s.stored(3, 0));
        assert_eq!(s.part(3, 0).expect("part 3.0").0.pieces.len(), 1);
        assert!(matches!(
            s.part(3, 0).expect("part 3.0").0.pieces[0],
            Piece::File(_)
        ));
        // Segments 0 (handed out, unwritten) and 1 (written) leave the window.
        for i in 171..=250u32 {
            s.video(i * 40, &frame(i % 50 == 0)).expect("video");
        }
        assert_eq!(s.segments().next().map(|x| x.seq), Some(2));
        assert_eq!(s.take_evicted(), [0, 1]);
        assert!(s.take_evicted().is_empty());
        let late = of(0).next().expect("a part of 0");
        assert!(
            !s.stored(0, late.at),
            "a part written after its segment left"
        );
    }

    fn config_tags() -> (Bytes, Bytes) {
        let mut v = vec![
            0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 0x42,
        ];
        v.extend_from_slice(&[1, 0, 2, 0x68, 0xce]);
        (Bytes::from(v), Bytes::from_static(&[0xaf, 0, 0x12, 0x10]))
    }

    fn frame(key: bool) -> Bytes {
        let t = if key { 0x17 } else { 0x27 };
        Bytes::from(vec![
            t,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            2,
            if key { 0x65 } else { 0x41 },
            0x88,
        ])
    }

    /// 25 fps with a keyframe every second and audio every 23 ms, target 2 s, window 3: segments
    /// are cut at the keyframe at or after each 2 s, the window slides, and the end is marked.
    #[test]
    fn segments_cut_at_keyframes_and_the_window_slides() {
        let mut s = Segmenter::new(2000, 0, 3);
        let (v, a) = config_tags();
        s.video(0, &v).expect("avc config");
        s.audio(0, &a).expect("aac config");
        assert!(s.playlist("").is_none(), "nothing complete yet");
        let audio = Bytes::from_static(&[0xaf, 1, 1, 2, 3]);
        let mut next_audio = 0;
        for i in 0..250u32 {
            let ms = i * 40;
            while next_audio <= ms {
                s.audio(next_audio, &audio).expect("audio");
                next_audio += 23;
            }
            s.video(ms, &frame(i % 25 == 0)).expect("video");
        }
        s.end();
        let durations: Vec<u64> = s.segments().map(|x| x.duration_ms).collect();
        // 10 s of video: segments [0,2) [2,4) [4,6) [6,8) [8,9.96]; the window keeps the last 3.
        assert_eq!(durations, [2000, 2000, 1960]);
        let seqs: Vec<u64> = s.segments().map(|x| x.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        let p = s.playlist("?t=x").expect("playlist");
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{p}");
        assert!(p.contains("#EXT-X-TARGETDURATION:2\n"), "{p}");
        assert!(p.contains("#EXTINF:1.960,\n4.ts?t=x\n"), "{p}");
        assert!(p.ends_with("#EXT-X-ENDLIST\n"), "{p}");
        let seg = in_memory(s.segment(3).expect("segment 3").0);
        assert_eq!(seg.len() % 188, 0);
        assert_eq!(seg[0], 0x47);
        assert!(s.segment(1).is_none(), "aged out of the window");
        // A new publish continues the numbering after a discontinuity.
        s.restart();
        s.video(0, &v).expect("avc config");
        s.audio(0, &a).expect("aac config");
        for i in 0..=50u32 {
            s.video(i * 40, &frame(i % 25 == 0)).expect("video");
        }
        let p = s.playlist("").expect("playlist");
        assert!(
            p.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n5.ts\n"),
            "{p}"
        );
        assert!(!p.contains("ENDLIST"), "{p}");
    }

    /// Low-latency HLS at 30 fps, keyframes every 2 s, segments of 2 s and parts of 500 ms:
    /// every part stays within the part target (and all but a segment's last reach 85 % of it,
    /// as the LL-HLS spec asks), parts are byte ranges that join into their segment, only a
    /// segment's first part is independent, and blocking reloads and the preload hint follow
    /// the part being built.
    #[test]
    fn low_latency_parts_tile_their_segments() {
        let mut s = Segmenter::new(2000, 500, 6);
        let (v, a) = config_tags();
        s.video(0, &v).expect("avc config");
        s.audio(0, &a).expect("aac config");
        let audio = Bytes::from_static(&[0xaf, 1, 1, 2, 3]);
        let mut next_audio = 0;
        let mut parts_cut = 0;
        // 6.5 s of video: segments 0, 1, 2 complete, segment 3 being built.
        for i in 0..=195u32 {
            let ms = i * 1000 / 30;
            while next_audio <= ms {
                s.audio(next_audio, &audio).expect("audio");
                next_audio += 21;
            }
            let cut = s.video(ms, &frame(i % 60 == 0)).expect("video");
            parts_cut += u32::from(cut.part);
        }
        let segs: Vec<&Segment> = s.segments().collect();
        assert_eq!(segs.len(), 3);
        for seg in &segs {
            assert_eq!(seg.duration_ms, 2000, "segment {}", seg.seq);
            assert_eq!(seg.parts.len(), 4, "segment {}", seg.seq);
            let total: u64 = seg.parts.iter().map(|p| p.duration_ms).sum();
            assert_eq!(total, seg.duration_ms);
            let mut joined = Vec::new();
            for (n, p) in seg.parts.iter().enumerate() {
                assert!(p.duration_ms <= 500, "{seg:?}");
                if n + 1 < seg.parts.len() {
                    assert!(p.duration_ms >= 425, "{seg:?}");
                }
                assert_eq!(p.independent, n == 0);
                let (bytes, d) = s.part(seg.seq, n).expect("part");
                let bytes = in_memory(bytes);
                assert_eq!(d, p.duration_ms);
                assert_eq!(bytes.len() % 188, 0);
                assert_eq!(bytes[0], 0x47);
                joined.extend_from_slice(&bytes);
            }
            assert_eq!(joined, in_memory(s.segment(seg.seq).expect("segment").0));
        }
        // Segment 3: its first part [6000, 6500) completed by the frame at 6500.
        assert_eq!(parts_cut, 3 * 4 + 1);
        assert!(s.part(3, 0).is_some());
        assert!(s.part(3, 1).is_none());
        assert!(s.part_pending(3, 1));
        assert!(!s.part_pending(3, 2));
        assert!(!s.part_pending(2, 3));
        let p = s.playlist("?token=t").expect("playlist");
        assert!(p.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n"));
        assert!(
            p.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n"),
            "{p}"
        );
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"), "{p}");
        // Parts are listed for the last two complete segments and the one being built.
        assert!(!p.contains("URI=\"0.0.ts"), "{p}");
        assert!(
            p.contains("#EXT-X-PART:DURATION=0.500,URI=\"1.0.ts?token=t\",INDEPENDENT=YES\n"),
            "{p}"
        );
        assert!(p.contains("URI=\"1.1.ts?token=t\"\n"), "{p}");
        assert!(p.contains("URI=\"2.3.ts?token=t\"\n#EXTINF:2.000,\n2.ts?token=t\n"));
        assert!(
            p.ends_with("\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"3.1.ts?token=t\"\n"),
            "{p}"
        );
        assert_eq!(p.matches("#EXT-X-PART:").count(), 4 + 4 + 1);
        // Blocking reloads.
        assert_eq!(s.ready(2, None), Ready::Now);
        assert_eq!(s.ready(3, None), Ready::Later);
        assert_eq!(s.ready(3, Some(0)), Ready::Now);
        assert_eq!(s.ready(2, Some(9)), Ready::Now, "a later part exists");
        assert_eq!(s.ready(3, Some(1)), Ready::Later);
        assert_eq!(s.ready(3, Some(2)), Ready::Later);
        assert_eq!(
            s.ready(3, Some(3)),
            Ready::TooFar,
            "three parts past the newest"
        );
        assert_eq!(s.ready(4, Some(0)), Ready::Later);
        assert_eq!(s.ready(4, None), Ready::Later);
        assert_eq!(s.ready(5, None), Ready::TooFar);
        // The publisher leaves: the part being built completes, nothing is pending any more.
        s.end();
        assert!(!s.part_pending(3, 1));
        assert!(s.part(3, 1).is_some());
        assert_eq!(s.ready(9, Some(0)), Ready::Now);
        let p = s.playlist("").expect("playlist");
        assert!(p.ends_with("#EXTINF:0.500,\n3.ts\n#EXT-X-ENDLIST\n"), "{p}");
        assert!(!p.contains("PRELOAD-HINT"), "{p}");
    }

    /// 30 fps in RTMP's whole milliseconds (33, 33, 34 ms apart) with 333 ms parts: no part
    /// is longer than the target, and all but a segment's last reach 85 % of it.
    #[test]
    fn uneven_frame_intervals_never_overrun_the_part_target() {
        let mut s = Segmenter::new(2000, 333, 6);
        let (v, _) = config_tags();
        s.video(0, &v).expect("avc config");
        for i in 0..=300u32 {
            s.video(i * 1000 / 30, &frame(i % 60 == 0)).expect("video");
        }
        let mut parts = 0;
        for seg in s.segments() {
            for (n, p) in seg.parts.iter().enumerate() {
                assert!(p.duration_ms <= 333, "{seg:?}");
                if n + 1 < seg.parts.len() {
                    assert!(p.duration_ms >= 283, "{seg:?}");
                }
                parts += 1;
            }
        }
        assert!(parts >= 20, "{parts}");
    }

    /// 25 fps with a keyframe every 2 s, 2 s segments: with 300 ms parts, parts as long as the
    /// frames allow (280 ms) left each segment a last part of one frame (40 ms), with 500 ms
    /// parts one of two frames; the parts now share the segment evenly, and no part is much
    /// shorter than the others. Where the parts tile the segment, nothing changes.
    #[test]
    fn no_segment_ends_in_a_sliver_of_a_part() {
        for (part_ms, shortest, longest, count) in
            [(300, 240, 280, 8), (500, 400, 400, 5), (400, 400, 400, 5)]
        {
            let mut s = Segmenter::new(2000, part_ms, 6);
            let (v, a) = config_tags();
            s.video(0, &v).expect("avc config");
            s.audio(0, &a).expect("aac config");
            let audio = Bytes::from_static(&[0xaf, 1, 1, 2, 3]);
            let mut next_audio = 0;
            for i in 0..=250u32 {
                let ms = i * 40;
                while next_audio <= ms {
                    s.audio(next_audio, &audio).expect("audio");
                    next_audio += 23;
                }
                s.video(ms, &frame(i % 50 == 0)).expect("video");
            }
            let segs: Vec<&Segment> = s.segments().collect();
            assert_eq!(segs.len(), 5, "{part_ms} ms parts");
            // The first segment learns the frame timing: from the second on, every one.
            for seg in &segs[1..] {
                let lengths: Vec<u64> = seg.parts.iter().map(|p| p.duration_ms).collect();
                assert_eq!(lengths.iter().sum::<u64>(), 2000, "{lengths:?}");
                assert_eq!(lengths.len(), count, "{part_ms} ms parts: {lengths:?}");
                let (min, max) = (lengths.iter().min(), lengths.iter().max());
                assert_eq!(
                    (min, max),
                    (Some(&shortest), Some(&longest)),
                    "{part_ms} ms parts: {lengths:?}"
                );
            }
            // Even the first has no sliver (its estimate of the segment's end is the target).
            let first = segs[0].parts.last().expect("parts").duration_ms;
            assert!(
                first >= part_ms / 2,
                "{part_ms} ms parts: {:?}",
                segs[0].parts
            );
        }
    }

    /// New settings for a stream (or a relay's copy becoming the origin) keep the numbering:
    /// the next segment follows the last one after a discontinuity.
    #[test]
    fn a_replaced_segmenter_goes_on_from_the_old_numbering() {
        let mut old = Segmenter::new(1000, 0, 6);
        for seq in 0..3 {
            old.push(Segment::new(
                seq,
                1000,
                Bytes::from_static(&[0x47; 188]),
                false,
            ));
        }
        assert!(!old.playlist("").expect("playlist").contains("PART-INF"));
        let mut s = Segmenter::replacing(old, 2000, 500, 6);
        let (v, _) = config_tags();
        s.video(0, &v).expect("avc config");
        for i in 0..=50u32 {
            s.video(i * 40, &frame(i % 25 == 0)).expect("video");
        }
        let p = s.playlist("").expect("playlist");
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{p}");
        assert!(p.contains("#EXT-X-DISCONTINUITY\n"), "{p}");
        assert!(p.contains("URI=\"3.0.ts\""), "the next segment is 3: {p}");
        assert!(p.contains("#EXT-X-PART-INF"), "{p}");
    }

    /// Audio only: parts are cut on audio frames, and every one is independent.
    #[test]
    fn audio_only_streams_get_independent_parts() {
        let mut s = Segmenter::new(1000, 250, 6);
        let (_, a) = config_tags();
        s.audio(0, &a).expect("aac config");
        let audio = Bytes::from_static(&[0xaf, 1, 1, 2, 3]);
        for i in 0..100u32 {
            s.audio(i * 21, &audio).expect("audio");
        }
        let seg = s.segments().next().expect("a segment");
        assert!(seg.parts.len() >= 4, "{seg:?}");
        assert!(
            seg.parts
                .iter()
                .all(|p| p.independent && p.duration_ms <= 250)
        );
    }

    #[test]
    fn frames_before_the_configuration_are_errors_and_before_a_keyframe_are_skipped() {
        let mut s = Segmenter::new(2000, 0, 3);
        assert_eq!(s.video(0, &frame(true)), Err(FlvError::NoAvcConfig));
        let (v, _) = config_tags();
        s.video(0, &v).expect("config");
        assert_eq!(s.video(40, &frame(false)), Ok(Cut::default()));
        assert!(s.current.is_none());
        assert_eq!(
            s.audio(0, &Bytes::from_static(&[0xaf, 1, 1])),
            Err(FlvError::NoAacConfig)
        );
    }
}

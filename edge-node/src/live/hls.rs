//! HLS from a live RTMP publish, in memory: FLV tags in, MPEG-TS segments cut at keyframes once
//! they reach the target duration, and a sliding-window media playlist. Pure (no I/O): the RTMP
//! session feeds it, the HTTP side reads it.

use super::flv::{self, AacConfig, Audio, AvcConfig, FlvError, Video};
use super::ts::{Frame, Muxer};
use bytes::Bytes;
use std::collections::VecDeque;

/// PTS/DTS start this far above zero (90 kHz), so a negative composition offset stays positive.
const TS_OFFSET: u64 = 90_000;

#[derive(Debug, Clone)]
pub struct Segment {
    pub seq: u64,
    pub duration_ms: u64,
    pub data: Bytes,
    /// The first segment of a new publish (the timeline starts again).
    pub discontinuity: bool,
}

#[derive(Debug)]
struct Building {
    seq: u64,
    start_ms: u64,
    last_ms: u64,
    data: Vec<u8>,
    discontinuity: bool,
}

#[derive(Debug)]
pub struct Segmenter {
    target_ms: u64,
    window: usize,
    muxer: Muxer,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    current: Option<Building>,
    segments: VecDeque<Segment>,
    next_seq: u64,
    /// The publisher left: the playlist ends (until the next publish).
    ended: bool,
    discontinuity_next: bool,
    /// RTMP timestamps are 32-bit milliseconds; this extends them across a wrap.
    last_rtmp_ms: Option<u32>,
    epoch_ms: u64,
}

impl Segmenter {
    pub fn new(target_ms: u64, window: usize) -> Segmenter {
        Segmenter {
            target_ms: target_ms.max(100),
            window: window.max(1),
            muxer: Muxer::default(),
            avc: None,
            aac: None,
            current: None,
            segments: VecDeque::new(),
            next_seq: 0,
            ended: false,
            discontinuity_next: false,
            last_rtmp_ms: None,
            epoch_ms: 0,
        }
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

    fn finish(&mut self, end_ms: Option<u64>) {
        let Some(b) = self.current.take() else {
            return;
        };
        let end = end_ms.unwrap_or(b.last_ms).max(b.start_ms);
        self.segments.push_back(Segment {
            seq: b.seq,
            duration_ms: (end - b.start_ms).max(1),
            data: Bytes::from(b.data),
            discontinuity: b.discontinuity,
        });
        while self.segments.len() > self.window {
            self.segments.pop_front();
        }
    }

    fn start(&mut self, at_ms: u64) {
        let mut data = Vec::with_capacity(256 * 1024);
        self.muxer
            .tables(&mut data, self.avc.is_some(), self.aac.is_some());
        self.current = Some(Building {
            seq: self.next_seq,
            start_ms: at_ms,
            last_ms: at_ms,
            data,
            discontinuity: std::mem::take(&mut self.discontinuity_next),
        });
        self.next_seq += 1;
    }

    /// At a point a segment may start (a keyframe, or any audio frame without video): closes
    /// the segment in progress once it reached the target and starts the next, or starts the
    /// first. True when a segment was closed.
    fn cut_if_due(&mut self, ms: u64) -> bool {
        let due = self
            .current
            .as_ref()
            .is_none_or(|c| ms.saturating_sub(c.start_ms) >= self.target_ms);
        if !due {
            return false;
        }
        let closed = self.current.is_some();
        self.finish(Some(ms));
        self.start(ms);
        closed
    }

    /// Feeds one video tag body; returns true when it closed a segment.
    pub fn video(&mut self, rtmp_ms: u32, tag: &Bytes) -> Result<bool, FlvError> {
        let ms = self.time(rtmp_ms);
        match flv::parse_video(tag, self.avc.as_ref())? {
            Video::Config(c) => {
                self.avc = Some(c);
                Ok(false)
            }
            Video::Skip => Ok(false),
            Video::Frame {
                keyframe,
                cts,
                nalus,
            } => {
                let closed = keyframe && self.cut_if_due(ms);
                let Some(avc) = self.avc.as_ref() else {
                    return Err(FlvError::NoAvcConfig);
                };
                let Some(cur) = self.current.as_mut() else {
                    // Frames before the first keyframe cannot be decoded: skip them.
                    return Ok(false);
                };
                let au = flv::annex_b(avc, keyframe, &nalus);
                let dts = TS_OFFSET + ms * 90;
                let pts = dts.saturating_add_signed(i64::from(cts) * 90);
                cur.last_ms = cur.last_ms.max(ms);
                self.muxer.pes(
                    &mut cur.data,
                    &Frame {
                        video: true,
                        pts,
                        dts: Some(dts),
                        pcr: Some(dts),
                        random_access: keyframe,
                        data: &au,
                    },
                );
                Ok(closed)
            }
        }
    }

    /// Feeds one audio tag body; an audio-only stream cuts its segments here.
    pub fn audio(&mut self, rtmp_ms: u32, tag: &Bytes) -> Result<bool, FlvError> {
        let ms = self.time(rtmp_ms);
        match flv::parse_audio(tag)? {
            Audio::Config(c) => {
                self.aac = Some(c);
                Ok(false)
            }
            Audio::Frame(f) => {
                let Some(aac) = self.aac else {
                    return Err(FlvError::NoAacConfig);
                };
                let closed = self.avc.is_none() && self.cut_if_due(ms);
                let Some(cur) = self.current.as_mut() else {
                    return Ok(false);
                };
                let pts = TS_OFFSET + ms * 90;
                cur.last_ms = cur.last_ms.max(ms);
                // Without video the audio carries the PCR.
                let pcr = self.avc.is_none().then_some(pts);
                let adts = flv::adts(&aac, &f);
                self.muxer.pes(
                    &mut cur.data,
                    &Frame {
                        video: false,
                        pts,
                        dts: None,
                        pcr,
                        random_access: false,
                        data: &adts,
                    },
                );
                Ok(closed)
            }
        }
    }

    /// A relay's copy: a segment pulled from the origin, kept in order in the window.
    pub fn push(&mut self, segment: Segment) {
        if self.segments.iter().any(|s| s.seq >= segment.seq) {
            return;
        }
        self.next_seq = segment.seq + 1;
        self.segments.push_back(segment);
        while self.segments.len() > self.window {
            self.segments.pop_front();
        }
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

    pub fn window(&self) -> usize {
        self.window
    }

    pub fn segment(&self, seq: u64) -> Option<Bytes> {
        self.segment_with_duration(seq).map(|(d, _)| d)
    }

    pub fn segment_with_duration(&self, seq: u64) -> Option<(Bytes, u64)> {
        self.segments
            .iter()
            .find(|s| s.seq == seq)
            .map(|s| (s.data.clone(), s.duration_ms))
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The media playlist; None until the first segment is complete. `query` (with its `?`)
    /// is appended to every segment URI.
    pub fn playlist(&self, query: &str) -> Option<String> {
        let first = self.segments.front()?;
        let longest = self
            .segments
            .iter()
            .map(|s| s.duration_ms)
            .max()
            .unwrap_or(0);
        let target = longest.max(self.target_ms).div_ceil(1000);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            first.seq
        );
        for s in &self.segments {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            out.push_str(&format!(
                "#EXTINF:{}.{:03},\n{}.ts{query}\n",
                s.duration_ms / 1000,
                s.duration_ms % 1000,
                s.seq
            ));
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut s = Segmenter::new(2000, 3);
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
        let seg = s.segment(3).expect("segment 3");
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

    #[test]
    fn frames_before_the_configuration_are_errors_and_before_a_keyframe_are_skipped() {
        let mut s = Segmenter::new(2000, 3);
        assert_eq!(s.video(0, &frame(true)), Err(FlvError::NoAvcConfig));
        let (v, _) = config_tags();
        s.video(0, &v).expect("config");
        assert_eq!(s.video(40, &frame(false)), Ok(false));
        assert!(s.current.is_none());
        assert_eq!(
            s.audio(0, &Bytes::from_static(&[0xaf, 1, 1])),
            Err(FlvError::NoAacConfig)
        );
    }
}

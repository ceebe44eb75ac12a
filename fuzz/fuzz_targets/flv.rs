//! FLV video and audio tag bodies (as RTMP media messages carry them) through the segmenter a
//! live stream feeds: AVC and AAC configurations, NAL units, ADTS framing, part and segment cuts.
//! Input: a sequence of [kind, timestamp (4 bytes), length (2 bytes), body].
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onda_edge::fuzz::Segmenter;

fuzz_target!(|data: &[u8]| {
    let mut s = Segmenter::new(1000, 200, 4);
    let mut rest = data;
    while rest.len() >= 7 {
        let video = rest[0] & 1 == 1;
        let ms = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[5], rest[6]])).min(rest.len() - 7);
        let tag = Bytes::copy_from_slice(&rest[7..7 + len]);
        rest = &rest[7 + len..];
        let _ = if video { s.video(ms, &tag) } else { s.audio(ms, &tag) };
        let _ = s.playlist("");
    }
});

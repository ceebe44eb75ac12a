//! The media inside RTMP messages: FLV video tag bodies (H.264 as AVC decoder configuration and
//! length-prefixed NAL units) and audio tag bodies (AAC as AudioSpecificConfig and raw frames),
//! turned into what MPEG-TS carries: H.264 Annex B access units and ADTS frames.
//!
//! Hand-written because rml_rtmp hands over the tag bytes unparsed and no maintained crate does
//! just this conversion; it is small, pure and fuzzed (bad input is an error, never a panic).

use bytes::{BufMut as _, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("the {0} tag is truncated")]
    Truncated(&'static str),
    #[error("video codec {0} is not supported: send H.264 (OBS: x264 or a hardware H.264 encoder)")]
    VideoCodec(u8),
    #[error("audio format {0} is not supported: send AAC")]
    AudioCodec(u8),
    #[error("the AVC decoder configuration is invalid: {0}")]
    AvcConfig(&'static str),
    #[error("the AAC configuration is invalid: {0}")]
    AacConfig(&'static str),
    #[error("a video frame came before the AVC decoder configuration")]
    NoAvcConfig,
    #[error("an audio frame came before the AAC configuration")]
    NoAacConfig,
    #[error("an AAC frame of {0} bytes is larger than ADTS can carry")]
    AacFrameTooLarge(usize),
}

/// H.264 parameters from the AVCDecoderConfigurationRecord (ISO 14496-15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AvcConfig {
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    /// Bytes of each NAL unit's length prefix (1, 2 or 4).
    pub length_size: usize,
}

/// AAC parameters from the AudioSpecificConfig (ISO 14496-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AacConfig {
    /// Audio object type (2 = AAC LC).
    pub object_type: u8,
    pub frequency_index: u8,
    pub channels: u8,
}

impl AacConfig {
    #[cfg(test)]
    pub(crate) fn sample_rate(&self) -> u32 {
        const RATES: [u32; 13] = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ];
        RATES
            .get(usize::from(self.frequency_index))
            .copied()
            .unwrap_or(44100)
    }
}

/// Which of a stream's two tracks an FLV tag (or RTMP media message) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagKind {
    Audio,
    Video,
}

impl TagKind {
    /// The FLV tag type.
    pub(crate) fn flv_type(self) -> u8 {
        match self {
            TagKind::Audio => 8,
            TagKind::Video => 9,
        }
    }
}

/// What one video tag body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Video {
    Config(AvcConfig),
    /// NAL units of one access unit, still without start codes.
    Frame {
        keyframe: bool,
        /// Composition time offset (PTS − DTS) in milliseconds.
        cts: i32,
        nalus: Vec<Bytes>,
    },
    /// End of sequence, or a frame type we skip (video info/command frames).
    Skip,
}

/// What one audio tag body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audio {
    Config(AacConfig),
    Frame(Bytes),
}

fn u16_at(b: &[u8], i: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
    ])))
}

pub(crate) fn parse_video(tag: &Bytes, config: Option<&AvcConfig>) -> Result<Video, FlvError> {
    let head = tag.get(..5).ok_or(FlvError::Truncated("video"))?;
    let frame_type = head[0] >> 4;
    let codec = head[0] & 0x0f;
    if head[0] & 0x80 != 0 {
        // Enhanced RTMP (HEVC, AV1): the high bit of the frame type marks it.
        return Err(FlvError::VideoCodec(codec));
    }
    if frame_type == 5 {
        return Ok(Video::Skip);
    }
    if codec != 7 {
        return Err(FlvError::VideoCodec(codec));
    }
    // SI24 composition time: sign-extend from 24 bits.
    let cts = (i32::from(head[2]) << 16 | i32::from(head[3]) << 8 | i32::from(head[4])) << 8 >> 8;
    let body = tag.slice(5..);
    match head[1] {
        0 => parse_avc_config(&body).map(Video::Config),
        1 => {
            let config = config.ok_or(FlvError::NoAvcConfig)?;
            let mut nalus = Vec::new();
            let mut i = 0;
            while i < body.len() {
                let len_bytes = body
                    .get(i..i + config.length_size)
                    .ok_or(FlvError::Truncated("video"))?;
                let len = len_bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                i += config.length_size;
                if len > body.len() - i {
                    return Err(FlvError::Truncated("video"));
                }
                if len > 0 {
                    nalus.push(body.slice(i..i + len));
                }
                i += len;
            }
            Ok(Video::Frame {
                keyframe: frame_type == 1,
                cts,
                nalus,
            })
        }
        _ => Ok(Video::Skip),
    }
}

fn parse_avc_config(b: &Bytes) -> Result<AvcConfig, FlvError> {
    if b.len() < 7 {
        return Err(FlvError::AvcConfig("shorter than its fixed header"));
    }
    if b[0] != 1 {
        return Err(FlvError::AvcConfig("unknown configuration version"));
    }
    let length_size = usize::from(b[4] & 0x03) + 1;
    if length_size == 3 {
        return Err(FlvError::AvcConfig("NAL unit length size of 3 bytes"));
    }
    let mut i = 5;
    let read_sets = |count: usize, i: &mut usize| -> Result<Vec<Bytes>, FlvError> {
        let mut sets = Vec::with_capacity(count);
        for _ in 0..count {
            let len = u16_at(b, *i).ok_or(FlvError::AvcConfig("truncated parameter set"))?;
            *i += 2;
            if len == 0 || len > b.len() - *i {
                return Err(FlvError::AvcConfig("truncated parameter set"));
            }
            sets.push(b.slice(*i..*i + len));
            *i += len;
        }
        Ok(sets)
    };
    let sps_count = usize::from(b[i] & 0x1f);
    i += 1;
    let sps = read_sets(sps_count, &mut i)?;
    let pps_count = usize::from(*b.get(i).ok_or(FlvError::AvcConfig("no PPS count"))?);
    i += 1;
    let pps = read_sets(pps_count, &mut i)?;
    if sps.is_empty() || pps.is_empty() {
        return Err(FlvError::AvcConfig("no SPS or no PPS"));
    }
    Ok(AvcConfig {
        sps,
        pps,
        length_size,
    })
}

pub(crate) fn parse_audio(tag: &Bytes) -> Result<Audio, FlvError> {
    let head = tag.get(..2).ok_or(FlvError::Truncated("audio"))?;
    let format = head[0] >> 4;
    if format != 10 {
        return Err(FlvError::AudioCodec(format));
    }
    let body = tag.slice(2..);
    match head[1] {
        0 => {
            let b = body
                .get(..2)
                .ok_or(FlvError::AacConfig("shorter than 2 bytes"))?;
            let object_type = b[0] >> 3;
            let frequency_index = ((b[0] & 0x07) << 1) | (b[1] >> 7);
            let channels = (b[1] >> 3) & 0x0f;
            if !(1..=4).contains(&object_type) {
                return Err(FlvError::AacConfig("not an AAC object type ADTS can carry"));
            }
            if frequency_index > 12 {
                return Err(FlvError::AacConfig("explicit or reserved sample rate"));
            }
            if !(1..=7).contains(&channels) {
                return Err(FlvError::AacConfig("channel configuration"));
            }
            Ok(Audio::Config(AacConfig {
                object_type,
                frequency_index,
                channels,
            }))
        }
        _ if body.len() > 8191 - 7 => Err(FlvError::AacFrameTooLarge(body.len())),
        _ => Ok(Audio::Frame(body)),
    }
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// Access unit delimiter (primary picture type: any), which MPEG-TS asks each AU to start with.
const AUD: [u8; 2] = [0x09, 0xf0];

/// One access unit in Annex B: an AUD, then (for a keyframe without them) the SPS and PPS,
/// then the frame's NAL units, each after a start code.
pub(crate) fn annex_b(config: &AvcConfig, keyframe: bool, nalus: &[Bytes]) -> Bytes {
    let size: usize = nalus.iter().map(|n| n.len() + 4).sum::<usize>() + 6;
    let mut out = BytesMut::with_capacity(size + 64);
    out.put_slice(&START_CODE);
    out.put_slice(&AUD);
    let has_sps = nalus
        .iter()
        .any(|n| n.first().is_some_and(|b| b & 0x1f == 7));
    if keyframe && !has_sps {
        for set in config.sps.iter().chain(&config.pps) {
            out.put_slice(&START_CODE);
            out.put_slice(set);
        }
    }
    for n in nalus {
        // An AUD the encoder sent itself would be a second one.
        if n.first().is_some_and(|b| b & 0x1f == 9) {
            continue;
        }
        out.put_slice(&START_CODE);
        out.put_slice(n);
    }
    out.freeze()
}

/// An AAC frame with its 7-byte ADTS header (no CRC).
pub(crate) fn adts(config: &AacConfig, frame: &[u8]) -> Bytes {
    let len = frame.len() + 7;
    let profile = config.object_type - 1;
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(0xff);
    out.put_u8(0xf1);
    out.put_u8((profile << 6) | (config.frequency_index << 2) | (config.channels >> 2));
    out.put_u8(((config.channels & 3) << 6) | ((len >> 11) & 0x03) as u8);
    out.put_u8(((len >> 3) & 0xff) as u8);
    out.put_u8((((len & 7) << 5) as u8) | 0x1f);
    out.put_u8(0xfc);
    out.put_slice(frame);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn avc_config_tag() -> Bytes {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut t = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 5];
        t.extend_from_slice(&sps);
        t.extend_from_slice(&[1, 0, 4]);
        t.extend_from_slice(&pps);
        Bytes::from(t)
    }

    #[test]
    fn h264_config_and_frames_become_annex_b() {
        let Video::Config(cfg) = parse_video(&avc_config_tag(), None).expect("config") else {
            panic!("not a config");
        };
        assert_eq!((cfg.sps.len(), cfg.pps.len(), cfg.length_size), (1, 1, 4));
        // A keyframe of one IDR slice, composition offset 40 ms.
        let frame = Bytes::from_static(&[0x17, 1, 0, 0, 40, 0, 0, 0, 3, 0x65, 0x88, 0x84]);
        let Video::Frame {
            keyframe,
            cts,
            nalus,
        } = parse_video(&frame, Some(&cfg)).expect("frame")
        else {
            panic!("not a frame");
        };
        assert!(keyframe);
        assert_eq!(cts, 40);
        let au = annex_b(&cfg, keyframe, &nalus);
        let expected: Vec<u8> = [
            &[0, 0, 0, 1, 0x09, 0xf0][..],
            &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
            &[0, 0, 0, 1, 0x65, 0x88, 0x84],
        ]
        .concat();
        assert_eq!(au.as_ref(), expected.as_slice());
        // A negative composition offset (SI24).
        let neg = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xfe, 0, 0, 0, 1, 0x41]);
        assert!(matches!(
            parse_video(&neg, Some(&cfg)),
            Ok(Video::Frame {
                cts: -2,
                keyframe: false,
                ..
            })
        ));
        assert_eq!(
            parse_video(
                &Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 9]),
                Some(&cfg)
            ),
            Err(FlvError::Truncated("video"))
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x12, 0, 0, 0, 0]), None),
            Err(FlvError::VideoCodec(2))
        );
        assert_eq!(parse_video(&frame, None), Err(FlvError::NoAvcConfig));
    }

    #[test]
    fn aac_config_and_frames_become_adts() {
        // AAC LC, 44.1 kHz (index 4), stereo: 0x12 0x10.
        let Audio::Config(cfg) =
            parse_audio(&Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).expect("config")
        else {
            panic!("not a config");
        };
        assert_eq!(
            (cfg.object_type, cfg.frequency_index, cfg.channels),
            (2, 4, 2)
        );
        assert_eq!(cfg.sample_rate(), 44100);
        let Audio::Frame(f) =
            parse_audio(&Bytes::from_static(&[0xaf, 1, 0xde, 0xad])).expect("frame")
        else {
            panic!("not a frame");
        };
        let a = adts(&cfg, &f);
        // Sync, MPEG-4, no CRC; LC, 44.1 kHz, 2 channels; length 9.
        assert_eq!(
            a.as_ref(),
            &[0xff, 0xf1, 0x50, 0x80, 0x01, 0x3f, 0xfc, 0xde, 0xad]
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0x2f, 1])),
            Err(FlvError::AudioCodec(2))
        );
    }

    proptest! {
        /// Whatever a publisher sends, parsing answers Ok or Err and never panics.
        #[test]
        fn arbitrary_tags_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let tag = Bytes::from(data);
            let cfg = match parse_video(&avc_config_tag(), None) {
                Ok(Video::Config(c)) => c,
                _ => unreachable!(),
            };
            let _ = parse_video(&tag, None);
            if let Ok(Video::Frame { keyframe, nalus, .. }) = parse_video(&tag, Some(&cfg)) {
                let _ = annex_b(&cfg, keyframe, &nalus);
            }
            if let Ok(Audio::Config(c)) = parse_audio(&tag) {
                let _ = adts(&c, &tag);
            }
        }
    }
}

//! MPEG-TS for HLS segments: one program with an H.264 and an AAC stream. The mpeg2ts crate
//! encodes the packets (PAT, PMT, PES headers, adaptation fields and their stuffing); cutting
//! each PES into 188-byte packets, continuity counters and where PCR goes are ours.

use bytes::Bytes;
use mpeg2ts::es::{StreamId, StreamType};
use mpeg2ts::pes::PesHeader;
use mpeg2ts::time::{ClockReference, Timestamp};
use mpeg2ts::ts::payload::{Bytes as TsBytes, Pat, Pes, Pmt};
use mpeg2ts::ts::{
    AdaptationField, ContinuityCounter, EsInfo, Pid, ProgramAssociation,
    TransportScramblingControl, TsHeader, TsPacket, TsPacketWriter, TsPayload, VersionNumber,
    WriteTsPacket as _,
};

const PMT_PID: u16 = 0x1000;
pub(super) const VIDEO_PID: u16 = 0x100;
pub(super) const AUDIO_PID: u16 = 0x101;
/// Payload bytes of a TS packet (188 minus the 4-byte header).
const PAYLOAD: usize = 184;
/// An adaptation field carrying a PCR: length, flags and the 6-byte PCR.
const AF_WITH_PCR: usize = 8;

/// 33-bit PTS/DTS wrap.
const TS_MASK: u64 = (1 << 33) - 1;

/// One elementary stream unit to packetize. Times are 90 kHz; `pcr` goes in the first
/// packet's adaptation field, with the random access flag for keyframes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame<'a> {
    pub video: bool,
    pub pts: u64,
    pub dts: Option<u64>,
    pub pcr: Option<u64>,
    pub random_access: bool,
    pub data: &'a Bytes,
}

/// Writes TS packets into segment buffers, keeping continuity counters across segments.
#[derive(Debug, Default)]
pub(super) struct Muxer {
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
}

fn pid(n: u16) -> Pid {
    // The PIDs are constants below 0x1FFF.
    Pid::new(n).unwrap_or(Pid::from(0u8))
}

fn header(p: u16, cc: &mut u8) -> TsHeader {
    let counter = ContinuityCounter::from_u8(*cc & 0x0f).unwrap_or_default();
    *cc = (*cc + 1) & 0x0f;
    TsHeader {
        transport_error_indicator: false,
        transport_priority: false,
        pid: pid(p),
        transport_scrambling_control: TransportScramblingControl::NotScrambled,
        continuity_counter: counter,
    }
}

fn write(out: &mut Vec<u8>, packet: &TsPacket) {
    let mut w = TsPacketWriter::new(out);
    // A packet we build always fits 188 bytes; a failure would be a bug of ours, and dropping
    // one packet is what a decoder tolerates best.
    if let Err(e) = w.write_ts_packet(packet) {
        tracing::error!("cannot write a TS packet: {e}");
    }
}

impl Muxer {
    /// PAT and PMT, which start every segment so each one decodes on its own.
    pub(super) fn tables(&mut self, out: &mut Vec<u8>, video: bool, audio: bool) {
        let pat = TsPacket {
            header: header(0, &mut self.cc_pat),
            adaptation_field: None,
            payload: Some(TsPayload::Pat(Pat {
                transport_stream_id: 1,
                version_number: VersionNumber::default(),
                table: vec![ProgramAssociation {
                    program_num: 1,
                    program_map_pid: pid(PMT_PID),
                }],
            })),
        };
        write(out, &pat);
        let mut es_info = Vec::new();
        if video {
            es_info.push(EsInfo {
                stream_type: StreamType::H264,
                elementary_pid: pid(VIDEO_PID),
                descriptors: vec![],
            });
        }
        if audio {
            es_info.push(EsInfo {
                stream_type: StreamType::AdtsAac,
                elementary_pid: pid(AUDIO_PID),
                descriptors: vec![],
            });
        }
        let pmt = TsPacket {
            header: header(PMT_PID, &mut self.cc_pmt),
            adaptation_field: None,
            payload: Some(TsPayload::Pmt(Pmt {
                program_num: 1,
                pcr_pid: Some(pid(if video { VIDEO_PID } else { AUDIO_PID })),
                version_number: VersionNumber::default(),
                program_info: vec![],
                es_info,
            })),
        };
        write(out, &pmt);
    }

    /// One PES (an access unit or an audio frame) cut into TS packets.
    pub(super) fn pes(&mut self, out: &mut Vec<u8>, f: &Frame<'_>) {
        let Frame {
            video,
            pts,
            dts,
            pcr,
            random_access,
            data,
        } = *f;
        let (p, stream_id) = if video {
            (VIDEO_PID, 0xe0)
        } else {
            (AUDIO_PID, 0xc0)
        };
        let stamp = |v: u64| Timestamp::new(v & TS_MASK).ok();
        let pes_header = PesHeader {
            stream_id: StreamId::new(stream_id),
            priority: false,
            data_alignment_indicator: true,
            copyright: false,
            original_or_copy: false,
            pts: stamp(pts),
            dts: dts.filter(|d| *d != pts).and_then(stamp),
            escr: None,
        };
        let optional = 3 + 5 + if pes_header.dts.is_some() { 5 } else { 0 };
        // PES_packet_length counts what follows it; 0 (unbounded) is allowed for video only.
        let pes_len = if video {
            0
        } else {
            u16::try_from(optional + data.len()).unwrap_or(0)
        };
        let adaptation = (pcr.is_some() || random_access).then(|| AdaptationField {
            discontinuity_indicator: false,
            random_access_indicator: random_access,
            es_priority_indicator: false,
            pcr: pcr.and_then(|v| ClockReference::new((v & TS_MASK) * 300).ok()),
            opcr: None,
            splice_countdown: None,
            transport_private_data: vec![],
            extension: None,
        });
        let af_len = match &adaptation {
            Some(a) if a.pcr.is_some() => AF_WITH_PCR,
            Some(_) => 2,
            None => 0,
        };
        let first = (PAYLOAD - af_len - 6 - optional).min(data.len());
        let cc = if video {
            &mut self.cc_video
        } else {
            &mut self.cc_audio
        };
        let packet = TsPacket {
            header: header(p, cc),
            adaptation_field: adaptation,
            payload: TsBytes::new(&data[..first]).ok().map(|d| {
                TsPayload::PesStart(Pes {
                    header: pes_header,
                    pes_packet_len: pes_len,
                    data: d,
                })
            }),
        };
        write(out, &packet);
        let mut i = first;
        while i < data.len() {
            let n = PAYLOAD.min(data.len() - i);
            let packet = TsPacket {
                header: header(p, cc),
                adaptation_field: None,
                payload: TsBytes::new(&data[i..i + n])
                    .ok()
                    .map(TsPayload::PesContinuation),
            };
            write(out, &packet);
            i += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpeg2ts::ts::{ReadTsPacket as _, TsPacketReader};

    /// What the crate's reader makes of our packets: every packet 188 bytes, the PES split and
    /// counted right, and the payload bytes back in order.
    #[test]
    fn a_pes_reads_back_whole() {
        let mut m = Muxer::default();
        let mut out = Vec::new();
        m.tables(&mut out, true, true);
        let data = Bytes::from((0..1000u32).map(|i| i as u8).collect::<Vec<u8>>());
        m.pes(
            &mut out,
            &Frame {
                video: true,
                pts: 183_600,
                dts: Some(180_000),
                pcr: Some(180_000),
                random_access: true,
                data: &data,
            },
        );
        let audio = Bytes::from_static(&[1, 2, 3, 4, 5]);
        m.pes(
            &mut out,
            &Frame {
                video: false,
                pts: 181_000,
                dts: None,
                pcr: None,
                random_access: false,
                data: &audio,
            },
        );
        assert_eq!(out.len() % 188, 0);
        let mut reader = TsPacketReader::new(&out[..]);
        let mut video = Vec::new();
        let mut audio_back = Vec::new();
        let mut video_cc = Vec::new();
        while let Some(p) = reader.read_ts_packet().expect("valid packet") {
            let bytes: Vec<u8> = match &p.payload {
                Some(TsPayload::PesStart(pes)) => {
                    if p.header.pid.as_u16() == VIDEO_PID {
                        assert_eq!(pes.header.pts.map(|t| t.as_u64()), Some(183_600));
                        assert_eq!(pes.header.dts.map(|t| t.as_u64()), Some(180_000));
                        let af = p.adaptation_field.as_ref().expect("adaptation field");
                        assert!(af.random_access_indicator);
                        assert_eq!(af.pcr.map(|c| c.as_u64()), Some(180_000 * 300));
                    }
                    pes.data.to_vec()
                }
                Some(TsPayload::PesContinuation(b)) => b.to_vec(),
                _ => continue,
            };
            match p.header.pid.as_u16() {
                VIDEO_PID => {
                    video_cc.push(p.header.continuity_counter.as_u8());
                    video.extend(bytes);
                }
                AUDIO_PID => audio_back.extend(bytes),
                _ => {}
            }
        }
        assert_eq!(video, data.to_vec());
        assert_eq!(audio_back, audio.to_vec());
        assert!(video_cc.windows(2).all(|w| w[1] == (w[0] + 1) & 0x0f));
    }
}

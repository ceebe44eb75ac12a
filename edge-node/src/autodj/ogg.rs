//! One continuous Ogg Opus stream out of many renditions. Each rendition is its own logical Ogg
//! stream (headers, serial number, granule positions from 0); played one after another they
//! would make a chained stream, which many players and ffmpeg's probing do not follow. So the
//! pages of every track after the first lose their header pages and are renumbered into the
//! first track's logical stream: same serial, continuing page sequence numbers and granule
//! positions, beginning/end-of-stream flags cleared, checksum recomputed. All renditions are
//! encoded with the same settings (48 kHz stereo Opus), so the first track's headers describe
//! them all.

/// Rewrites the pages of consecutive tracks into one logical stream.
#[derive(Debug, Default)]
pub(super) struct Chain {
    /// Serial number and next page sequence number of the output stream, once it started.
    serial: Option<u32>,
    seq: u32,
    /// Granule position the current track's positions are added to.
    base: u64,
    /// The highest granule position written so far.
    last: u64,
    /// Header pages of the current track still to drop (OpusHead, OpusTags).
    skip_headers: bool,
}

impl Chain {
    /// The page as it goes out, or `None` when it is dropped (a later track's headers).
    pub(super) fn rewrite(&mut self, page: &[u8]) -> Option<Vec<u8>> {
        if page.len() < 27 || &page[..4] != b"OggS" {
            return None;
        }
        let flags = page[5];
        let bos = flags & 0x02 != 0;
        let granule = u64::from_le_bytes(page[6..14].try_into().ok()?);
        let serial = u32::from_le_bytes(page[14..18].try_into().ok()?);
        let Some(out_serial) = self.serial else {
            // The very first track passes as it is: its headers start the stream.
            self.serial = Some(serial);
            self.seq = u32::from_le_bytes(page[18..22].try_into().ok()?).wrapping_add(1);
            if granule != u64::MAX {
                self.last = self.last.max(granule);
            }
            return Some(page.to_vec());
        };
        if bos {
            // A new track: continue from where the last one ended, without its headers.
            self.base = self.last;
            self.skip_headers = true;
        }
        if self.skip_headers && granule == 0 {
            // OpusHead and OpusTags pages carry granule position 0.
            return None;
        }
        self.skip_headers = false;
        let mut out = page.to_vec();
        out[5] = flags & !0x06;
        if granule != u64::MAX {
            let g = self.base + granule;
            self.last = self.last.max(g);
            out[6..14].copy_from_slice(&g.to_le_bytes());
        }
        out[14..18].copy_from_slice(&out_serial.to_le_bytes());
        out[18..22].copy_from_slice(&self.seq.to_le_bytes());
        self.seq = self.seq.wrapping_add(1);
        out[22..26].copy_from_slice(&[0; 4]);
        let crc = crc32(&out);
        out[22..26].copy_from_slice(&crc.to_le_bytes());
        Some(out)
    }
}

/// Ogg's page checksum: CRC-32 with polynomial 0x04C11DB7, no reflection, initial value and
/// final XOR 0 (not the common zlib CRC-32, hence not a crc crate's default). Written here
/// because it is the one checksum this module needs and a dozen lines.
pub(super) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(flags: u8, granule: u64, serial: u32, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(flags);
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&seq.to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        p.push(1);
        p.push(u8::try_from(body.len()).expect("small"));
        p.extend_from_slice(body);
        let crc = crc32(&p);
        p[22..26].copy_from_slice(&crc.to_le_bytes());
        p
    }

    #[test]
    fn later_tracks_join_the_first_tracks_stream() {
        let mut c = Chain::default();
        // Track 1: headers, two audio pages, end of stream.
        let t1 = [
            page(0x02, 0, 11, 0, b"OpusHead"),
            page(0, 0, 11, 1, b"OpusTags"),
            page(0, 960, 11, 2, b"a"),
            page(0x04, 1920, 11, 3, b"b"),
        ];
        let out1: Vec<Vec<u8>> = t1.iter().filter_map(|p| c.rewrite(p)).collect();
        assert_eq!(out1.len(), 4);
        assert_eq!(out1[0], t1[0], "the first track passes unchanged");
        // Track 2 with another serial: its headers are dropped, its pages renumbered.
        let t2 = [
            page(0x02, 0, 22, 0, b"OpusHead"),
            page(0, 0, 22, 1, b"OpusTags"),
            page(0, 960, 22, 2, b"c"),
            page(0x04, 1500, 22, 3, b"d"),
        ];
        let out2: Vec<Vec<u8>> = t2.iter().filter_map(|p| c.rewrite(p)).collect();
        assert_eq!(out2.len(), 2);
        for (i, p) in out2.iter().enumerate() {
            assert_eq!(u32::from_le_bytes(p[14..18].try_into().expect("4")), 11);
            assert_eq!(
                u32::from_le_bytes(p[18..22].try_into().expect("4")),
                4 + i as u32
            );
            assert_eq!(p[5] & 0x06, 0, "no BOS/EOS inside the stream");
            // The checksum is right: recomputing over the page with a zero field gives it.
            let mut z = p.clone();
            z[22..26].copy_from_slice(&[0; 4]);
            assert_eq!(crc32(&z).to_le_bytes(), p[22..26]);
        }
        let g = |p: &Vec<u8>| u64::from_le_bytes(p[6..14].try_into().expect("8"));
        assert_eq!((g(&out2[0]), g(&out2[1])), (1920 + 960, 1920 + 1500));
        assert_eq!(out2[0][28..], *b"c");
    }

    #[test]
    fn the_checksum_is_ogg_crc32() {
        // CRC-32 (poly 0x04C11DB7, unreflected, init 0, no final XOR) of "123456789".
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
    }
}

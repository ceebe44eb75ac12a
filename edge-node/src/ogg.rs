//! The logical streams of an Ogg source, so every listener can decode from its first byte.
//!
//! Source clients (Liquidsoap, ices2, ezstream, libshout) start a new logical stream — new serial
//! number, new header pages — for every track: a chained Ogg stream. A decoder needs a link's
//! header pages (Vorbis' identification, comment and setup packets; OpusHead and OpusTags; FLAC's
//! and Speex's headers) before any of its audio pages. So the tracker keeps, for every link whose
//! bytes a listener may still be sent, where it starts, its header pages, where its audio begins
//! and the TITLE/ARTIST of its comment header. A listener starting at any offset is sent the
//! header pages of the link that offset belongs to, then audio from a page boundary of that link.
//!
//! Pure code over bytes; any input is safe.

use bytes::Bytes;
use std::collections::VecDeque;

/// Largest set of header pages kept for one link (comment headers can carry cover art). A link
/// with more is passed through, but its headers cannot be repeated to listeners joining later.
const MAX_HEADERS: usize = 1 << 20;
/// Most links remembered (tiny tracks at a high rate stay bounded too).
const MAX_LINKS: usize = 256;
/// Most bytes of a comment packet parsed (the tags come first in practice; pictures are large).
const MAX_COMMENT: usize = 64 * 1024;
/// Most logical streams followed in one link (a multiplexed link has one per elementary
/// stream: a handful in practice). A link with more is not followed: its pages pass through as
/// plain data, so a source cannot make the tracker's memory or per-page work grow.
const MAX_STREAMS: usize = 16;

/// The TITLE and ARTIST comments of a link, as its comment header carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    pub artist: String,
    pub title: String,
}

impl Tags {
    pub fn is_empty(&self) -> bool {
        self.artist.is_empty() && self.title.is_empty()
    }

    /// "Artist - Title", or whichever of the two there is.
    pub fn display(&self) -> String {
        match (self.artist.is_empty(), self.title.is_empty()) {
            (false, false) => format!("{} - {}", self.artist, self.title),
            (false, true) => self.artist.clone(),
            _ => self.title.clone(),
        }
    }
}

/// One link of a chained stream whose header pages are complete.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// Stream offset of its first beginning-of-stream page.
    pub start: u64,
    /// Stream offset just after its last header page: where its audio pages begin.
    pub data_start: u64,
    /// Its header pages, in stream order; `None` when they were too large to keep.
    pub headers: Option<Bytes>,
}

/// What a codec's headers look like, read off its beginning-of-stream packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comment {
    /// The comment packet starts with this prefix (Vorbis, Opus, Theora).
    Prefixed(&'static [u8]),
    /// The comment packet is the second one, with no prefix (Speex).
    Plain,
    /// A FLAC metadata block of type 4 (VORBIS_COMMENT) after a 4-byte block header.
    FlacBlock,
    /// Unknown codec: no tags.
    None,
}

/// One elementary stream of the link being read.
#[derive(Debug)]
struct Stream {
    serial: u32,
    /// Header packets the codec has; `None` for a codec we do not know (its header pages are then
    /// those with granule position 0).
    needed: Option<usize>,
    done_packets: usize,
    complete: bool,
    comment: Comment,
    /// The packet being assembled while its index is one that may carry comments.
    packet: Vec<u8>,
    tags: Option<Tags>,
}

impl Stream {
    fn new(serial: u32, first: &[u8]) -> Stream {
        let (needed, comment) = if first.starts_with(b"\x01vorbis") {
            (Some(3), Comment::Prefixed(b"\x03vorbis"))
        } else if first.starts_with(b"OpusHead") {
            (Some(2), Comment::Prefixed(b"OpusTags"))
        } else if first.starts_with(b"\x80theora") {
            (Some(3), Comment::Prefixed(b"\x81theora"))
        } else if first.starts_with(b"\x7fFLAC") && first.len() >= 9 {
            // The count of header packets after this one; 0 means "unknown".
            let more = usize::from(u16::from_be_bytes([first[7], first[8]]));
            ((more > 0).then_some(1 + more), Comment::FlacBlock)
        } else if first.starts_with(b"Speex   ") && first.len() >= 80 {
            let extra = u32::from_le_bytes([first[76], first[77], first[78], first[79]]);
            let extra = usize::try_from(extra).unwrap_or(usize::MAX).min(16);
            (Some(2 + extra), Comment::Plain)
        } else {
            (None, Comment::None)
        };
        Stream {
            serial,
            needed,
            done_packets: 0,
            complete: false,
            comment,
            packet: Vec::new(),
            tags: None,
        }
    }

    /// Counts the header packets ending on `page` and reads the comment packet when it ends.
    fn header_page(&mut self, page: &Page<'_>) {
        let Some(needed) = self.needed else {
            return;
        };
        let mut at = 0;
        for &lace in page.lacing {
            let end = (at + usize::from(lace)).min(page.body.len());
            if self.wants_packet(self.done_packets) && self.packet.len() < MAX_COMMENT {
                let room = MAX_COMMENT - self.packet.len();
                let piece = &page.body[at..end];
                self.packet
                    .extend_from_slice(&piece[..piece.len().min(room)]);
            }
            at = end;
            if lace < 255 {
                if self.wants_packet(self.done_packets) {
                    let packet = std::mem::take(&mut self.packet);
                    if let Some(tags) = self.read_comment(&packet) {
                        self.tags = Some(tags);
                    }
                }
                self.packet.clear();
                self.done_packets += 1;
                if self.done_packets >= needed {
                    self.complete = true;
                    return;
                }
            }
        }
    }

    /// Whether packet number `index` may be the comment header.
    fn wants_packet(&self, index: usize) -> bool {
        self.tags.is_none()
            && match self.comment {
                Comment::Prefixed(_) | Comment::Plain => index == 1,
                Comment::FlacBlock => index >= 1,
                Comment::None => false,
            }
    }

    fn read_comment(&self, packet: &[u8]) -> Option<Tags> {
        let body = match self.comment {
            Comment::Prefixed(prefix) => packet.strip_prefix(prefix)?,
            Comment::Plain => packet,
            Comment::FlacBlock => (packet.first()? & 0x7F == 4).then(|| packet.get(4..))??,
            Comment::None => return None,
        };
        Some(parse_comments(body))
    }
}

/// Reads TITLE and ARTIST from a Vorbis comment structure (vendor string, then `KEY=value`
/// entries, lengths little-endian). A truncated structure yields what came before the cut.
pub(crate) fn parse_comments(b: &[u8]) -> Tags {
    let mut tags = Tags::default();
    let mut rest = b;
    let Some(vendor) = length(&mut rest) else {
        return tags;
    };
    if take(&mut rest, vendor).is_none() {
        return tags;
    }
    let Some(count) = length(&mut rest) else {
        return tags;
    };
    for _ in 0..count {
        let Some(entry) = length(&mut rest).and_then(|n| take(&mut rest, n)) else {
            break;
        };
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        let slot = if key.eq_ignore_ascii_case("TITLE") {
            &mut tags.title
        } else if key.eq_ignore_ascii_case("ARTIST") {
            &mut tags.artist
        } else {
            continue;
        };
        if slot.is_empty() {
            *slot = value
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_string();
        }
    }
    tags
}

/// The first `len` bytes of `rest`, which moves past them.
fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (head, tail) = (rest.get(..len)?, rest.get(len..)?);
    *rest = tail;
    Some(head)
}

/// A little-endian 32-bit length at the start of `rest`, which moves past it.
fn length(rest: &mut &[u8]) -> Option<usize> {
    let n: [u8; 4] = take(rest, 4)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(n)).ok()
}

/// One page's fields the tracker uses.
struct Page<'a> {
    bos: bool,
    granule: u64,
    serial: u32,
    lacing: &'a [u8],
    body: &'a [u8],
}

impl<'a> Page<'a> {
    /// The page at the start of `b`, which holds at least the whole page.
    fn parse(b: &'a [u8], len: usize) -> Page<'a> {
        let n = usize::from(b[26]);
        Page {
            bos: b[5] & 0x02 != 0,
            granule: u64::from_le_bytes(b[6..14].try_into().unwrap_or([0xFF; 8])),
            serial: u32::from_le_bytes(b[14..18].try_into().unwrap_or([0; 4])),
            lacing: &b[27..27 + n],
            body: &b[27 + n..len],
        }
    }

    /// The first packet on the page (or as much of it as the page holds).
    fn first_packet(&self) -> &'a [u8] {
        let mut len = 0;
        for &lace in self.lacing {
            len += usize::from(lace);
            if lace < 255 {
                break;
            }
        }
        &self.body[..len.min(self.body.len())]
    }
}

/// The link whose header pages are being read.
#[derive(Debug)]
struct Building {
    start: u64,
    headers: Vec<u8>,
    too_large: bool,
    streams: Vec<Stream>,
    /// Still in the run of beginning-of-stream pages (a multiplexed link has one per stream).
    in_bos: bool,
}

/// Follows an Ogg source's pages: see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct OggTracker {
    pending: Vec<u8>,
    pending_at: u64,
    links: VecDeque<Link>,
    building: Option<Building>,
    /// Tags of links completed since the last [`OggTracker::take_tags`].
    new_tags: Option<Tags>,
    /// The run of beginning-of-stream pages being read has more than [`MAX_STREAMS`] streams:
    /// its link is not followed, up to the run's end.
    overflowed: bool,
}

impl OggTracker {
    /// Feeds the stream's bytes in order.
    pub(crate) fn feed(&mut self, data: &[u8]) {
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
            let Some(page) = crate::frames::ogg(rest) else {
                if rest.len() >= 27 + 255 || rest[4] != 0 {
                    i += 1; // not a page after all
                    continue;
                }
                break; // segment table not here yet
            };
            if rest.len() < page.len {
                break;
            }
            let start = self.pending_at + i as u64;
            self.page(&rest[..page.len], start);
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

    fn page(&mut self, bytes: &[u8], start: u64) {
        let end = start + bytes.len() as u64;
        let page = Page::parse(bytes, bytes.len());
        if page.bos {
            if self.overflowed {
                return;
            }
            if !self.building.as_ref().is_some_and(|b| b.in_bos) {
                // A new link: whatever was being read is abandoned (a source that restarted).
                self.building = Some(Building {
                    start,
                    headers: Vec::new(),
                    too_large: false,
                    streams: Vec::new(),
                    in_bos: true,
                });
            }
            if let Some(b) = &mut self.building
                && !b.streams.iter().any(|s| s.serial == page.serial)
            {
                if b.streams.len() >= MAX_STREAMS {
                    // More streams than any real link: not followed (see MAX_STREAMS).
                    self.building = None;
                    self.overflowed = true;
                    return;
                }
                b.streams
                    .push(Stream::new(page.serial, page.first_packet()));
            }
        } else {
            self.overflowed = false;
            if let Some(b) = &mut self.building {
                b.in_bos = false;
            }
        }
        let Some(b) = &mut self.building else {
            return;
        };
        let Some(stream) = b.streams.iter_mut().find(|s| s.serial == page.serial) else {
            return;
        };
        if stream.complete {
            return;
        }
        if stream.needed.is_none() && page.granule != 0 && !page.bos {
            // An unknown codec's first audio page: its headers ended before this page.
            stream.complete = true;
            self.complete_if_done(start);
            return;
        }
        stream.header_page(&page);
        if b.headers.len() + bytes.len() <= MAX_HEADERS {
            b.headers.extend_from_slice(bytes);
        } else {
            b.too_large = true;
        }
        self.complete_if_done(end);
    }

    /// Moves the link being read to the finished ones once every stream has its headers.
    fn complete_if_done(&mut self, data_start: u64) {
        let done = self
            .building
            .as_ref()
            .is_some_and(|b| b.streams.iter().all(|s| s.complete));
        if !done {
            return;
        }
        let Some(b) = self.building.take() else {
            return;
        };
        let tags = b
            .streams
            .iter()
            .find_map(|s| s.tags.clone())
            .unwrap_or_default();
        self.new_tags = Some(tags);
        self.links.push_back(Link {
            start: b.start,
            data_start,
            headers: (!b.too_large).then(|| Bytes::from(b.headers)),
        });
        if self.links.len() > MAX_LINKS {
            self.links.pop_front();
        }
    }

    /// Forgets links no listener can start in any more: those ending before `oldest`, the
    /// oldest stream offset still buffered.
    pub(crate) fn forget_before(&mut self, oldest: u64) {
        while self.links.len() > 1 && self.links[1].start <= oldest {
            self.links.pop_front();
        }
    }

    /// The tags of the newest link, once, when its headers are complete.
    pub(crate) fn take_tags(&mut self) -> Option<Tags> {
        self.new_tags.take()
    }

    /// Where a listener that would start at `pos` (a page boundary, or the buffer's end) starts,
    /// and the header pages to send it first. `oldest` is the oldest offset still buffered.
    pub(crate) fn start_for(&self, pos: u64, oldest: u64) -> (u64, Option<Bytes>) {
        // No page boundary found after `pos` (the newest page is still arriving): from that
        // page's beginning.
        let pos = pos.min(self.pending_at);
        if let Some(b) = &self.building
            && b.start <= pos
            && b.start >= oldest
        {
            // Inside header pages still arriving: from their beginning, in stream order.
            return (b.start, None);
        }
        let at = self.links.partition_point(|l| l.start <= pos);
        // Before every known link (its own link's headers were never seen, e.g. a relay that
        // joined mid-stream): forward to the first link whose headers are known.
        let link = match at.checked_sub(1) {
            Some(i) => &self.links[i],
            None => match self.links.front() {
                Some(first) => first,
                None => return (pos, None),
            },
        };
        match &link.headers {
            Some(h) => (pos.max(link.data_start), Some(h.clone())),
            // Headers too large to repeat: from the link's beginning if still buffered.
            None if link.start >= oldest => (link.start, None),
            None => (pos, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of `serial` holding `packets` (each under 255 bytes), flags and granule as given.
    fn page(serial: u32, bos: bool, granule: u64, packets: &[&[u8]]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(if bos { 2 } else { 0 });
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        p.push(u8::try_from(packets.len()).expect("few"));
        for packet in packets {
            p.push(u8::try_from(packet.len()).expect("small"));
        }
        for packet in packets {
            p.extend_from_slice(packet);
        }
        p
    }

    fn comments(vendor: &str, entries: &[&str]) -> Vec<u8> {
        let mut c = (vendor.len() as u32).to_le_bytes().to_vec();
        c.extend_from_slice(vendor.as_bytes());
        c.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            c.extend_from_slice(&(e.len() as u32).to_le_bytes());
            c.extend_from_slice(e.as_bytes());
        }
        c
    }

    /// A Vorbis link: identification page, then comment and setup in one page, then audio.
    fn vorbis(serial: u32, artist: &str, title: &str) -> (Vec<u8>, Vec<u8>) {
        let tags = [
            b"\x03vorbis".to_vec(),
            comments(
                "test",
                &[&format!("artist={artist}"), &format!("TITLE={title}")],
            ),
        ]
        .concat();
        let head = [
            page(serial, true, 0, &[b"\x01vorbis-id"]),
            page(serial, false, 0, &[&tags, b"\x05vorbis-setup"]),
        ]
        .concat();
        let audio: Vec<u8> = (1..4)
            .flat_map(|g| page(serial, false, g * 1024, &[b"audio-packet"]))
            .collect();
        (head, audio)
    }

    #[test]
    fn every_link_keeps_its_headers_and_tags_and_listeners_get_their_links() {
        let (head1, audio1) = vorbis(1, "Artist A", "Song A");
        let (head2, audio2) = vorbis(2, "Artist B", "Song B");
        let stream = [head1.clone(), audio1.clone(), head2.clone(), audio2.clone()].concat();
        for piece in [1, 7, 64, stream.len()] {
            let mut t = OggTracker::default();
            for p in stream.chunks(piece) {
                t.feed(p);
            }
            assert_eq!(t.links.len(), 2, "piece {piece}");
            let second = (head1.len() + audio1.len()) as u64;
            // A listener starting in the first link's audio gets the first link's headers.
            let in_first = head1.len() as u64 + 10;
            assert_eq!(
                t.start_for(in_first, 0),
                (in_first, Some(Bytes::from(head1.clone())))
            );
            // One starting right at (or inside) the second link's headers gets them, then audio.
            let data2 = second + head2.len() as u64;
            for pos in [second, second + 5] {
                assert_eq!(
                    t.start_for(pos, 0),
                    (data2, Some(Bytes::from(head2.clone()))),
                    "piece {piece}, pos {pos}"
                );
            }
            assert_eq!(
                t.take_tags().map(|tags| tags.display()).as_deref(),
                Some("Artist B - Song B")
            );
            // Once the first link is no longer buffered it is forgotten.
            t.forget_before(second + 1);
            assert_eq!(t.links.len(), 1);
            assert_eq!(
                t.start_for(0, second + 1).0,
                data2,
                "forward to a known link"
            );
        }
    }

    #[test]
    fn headers_still_arriving_are_read_in_order_and_opus_tags_are_read() {
        let tags = [b"OpusTags".to_vec(), comments("x", &["TITLE=Only Title"])].concat();
        let head = page(9, true, 0, &[b"OpusHead\x01\x02"]);
        let mut t = OggTracker::default();
        t.feed(&head);
        assert_eq!(
            t.start_for(head.len() as u64, 0),
            (0, None),
            "OpusTags not here yet"
        );
        assert_eq!(t.take_tags(), None);
        let second = page(9, false, 0, &[&tags]);
        t.feed(&second);
        let data = (head.len() + second.len()) as u64;
        assert_eq!(
            t.start_for(0, 0),
            (data, Some(Bytes::from([head, second].concat())))
        );
        let got = t.take_tags().expect("tags");
        assert_eq!(got.display(), "Only Title");
        assert_eq!(t.take_tags(), None, "once");
    }

    #[test]
    fn unknown_codecs_use_granule_zero_pages_and_comment_parsing_is_total() {
        let mut t = OggTracker::default();
        let head = [
            page(3, true, 0, &[b"mystery"]),
            page(3, false, 0, &[b"more"]),
        ]
        .concat();
        t.feed(&head);
        t.feed(&page(3, false, 500, &[b"audio"]));
        assert_eq!(
            t.start_for(0, 0),
            (head.len() as u64, Some(Bytes::from(head)))
        );
        for n in 0..40 {
            let c = comments("vendor", &["TITLE=x", "ARTIST=y"]);
            let _ = parse_comments(&c[..n.min(c.len())]);
        }
        assert_eq!(parse_comments(&[0xFF; 12]), Tags::default());
    }

    #[test]
    fn a_flood_of_beginning_of_stream_pages_is_not_followed() {
        let mut t = OggTracker::default();
        let mut most = 0;
        for serial in 0..100_000u32 {
            t.feed(&page(serial, true, 0, &[b"\x01vorbis-id"]));
            // The same serial again is the same stream, not another one.
            t.feed(&page(serial, true, 0, &[b"\x01vorbis-id"]));
            let tracked = t.building.as_ref().map_or(0, |b| b.streams.len());
            most = most.max(tracked);
            assert!(tracked <= MAX_STREAMS, "page {serial}: {tracked} streams");
        }
        assert_eq!(most, MAX_STREAMS, "the streams up to the cap are followed");
        assert!(t.links.is_empty());
        // The run ends; the next link is followed again.
        t.feed(&page(7, false, 0, &[b"data"]));
        let (head, audio) = vorbis(100_001, "A", "Next");
        t.feed(&head);
        t.feed(&audio);
        assert_eq!(
            t.take_tags().map(|tags| tags.display()).as_deref(),
            Some("A - Next")
        );
    }
}

//! Glass-to-glass latency of live HLS, for benchmarks. The publisher draws its wall clock into
//! every frame as it makes it (a barcode of the milliseconds, 20 bits); players that start and
//! fetch as hls.js does record when each frame's bytes arrive; ffmpeg decodes the first frames
//! a player got and reads the barcodes, which maps the stream's PTS to capture time. A frame's
//! latency is the time it is shown minus the time it was captured, with the player showing
//! frames in real time from where it joined and stalling when a frame is not there yet.
//!
//! - Plain HLS: the player starts 3 target durations behind the newest media (hls.js'
//!   `liveSyncDurationCount`, the HLS spec's hold-back) and reloads the playlist every 250 ms.
//! - LL-HLS: it starts `PART-HOLD-BACK` behind the newest part, fetching from the independent
//!   part before that, and then asks blocking reloads for the part after the last it has.

use anyhow::Context as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bits of the clock drawn: milliseconds modulo 2^20 (17 minutes).
const BITS: u32 = 20;
const WRAP: i64 = 1 << BITS;
/// Each bit is a black or white square this many pixels wide, in the top-left corner.
const BLOCK: u32 = 32;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The lavfi graph of the source: a 1280x720 test pattern at 30 fps made in real time, with
/// the wall clock at the moment each frame is made drawn as a barcode.
pub fn clock_source() -> String {
    // `realtime` paces the frames; the clock is taken after it (RTCTIME, microseconds), put in
    // the PTS for the boxes to read as `t`, and the PTS are then made regular again.
    let mut f = format!(
        "testsrc2=size=1280x720:rate=30,realtime,settb=1/1000,setpts=RTCTIME/1000,\
         drawbox=x=0:y=0:w={}:h={BLOCK}:color=black:t=fill",
        BITS * BLOCK
    );
    for k in 0..BITS {
        f.push_str(&format!(
            ",drawbox=x={}:y=0:w={BLOCK}:h={BLOCK}:color=white:t=fill:\
             enable='mod(floor(mod(t*1000\\,{WRAP})/{})\\,2)'",
            k * BLOCK,
            1u64 << k
        ));
    }
    f.push_str(",setpts=N*1000/30");
    f
}

/// ffmpeg publishing the clock source (H.264 2.5 Mbit/s, keyframe every `gop_frames`,
/// x264 `zerolatency` as low-latency streamers set it, AAC) to `url` over RTMP.
pub fn publisher(url: &str, gop_frames: u32) -> anyhow::Result<Child> {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(clock_source())
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-b:v",
            "2500k",
            "-maxrate",
            "2500k",
            "-bufsize",
            "2500k",
            "-g",
            &gop_frames.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-f",
            "flv",
            url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("ffmpeg publisher")
}

/// The PTS (milliseconds) of every video PES that starts in `ts` (MPEG-TS), in order.
pub fn video_pts_ms(ts: &[u8]) -> Vec<i64> {
    let mut out = Vec::new();
    for p in ts.chunks_exact(188).filter(|p| p[0] == 0x47) {
        let pusi = p[1] & 0x40 != 0;
        let afc = (p[3] >> 4) & 3;
        if !pusi || afc & 1 == 0 {
            continue;
        }
        let start = if afc & 2 != 0 {
            5 + usize::from(p[4])
        } else {
            4
        };
        let Some(pes) = p.get(start..) else { continue };
        // A video stream id (0xE0–0xEF) with a PTS.
        if pes.len() < 14 || pes[..3] != [0, 0, 1] || pes[3] & 0xf0 != 0xe0 || pes[7] & 0x80 == 0 {
            continue;
        }
        let b = &pes[9..14];
        let pts = (u64::from(b[0] >> 1) & 7) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1);
        out.push((pts / 90) as i64);
    }
    out
}

/// Decodes `ts` with ffmpeg and reads the clock drawn in each frame: (PTS ms, clock ms mod 2^20).
pub fn read_clock(ts: &[u8]) -> anyhow::Result<Vec<(i64, i64)>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("start.ts");
    std::fs::write(&file, ts)?;
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "info",
            "-copyts",
            "-i",
        ])
        .arg(&file)
        .args([
            "-map",
            "0:v:0",
            "-vf",
            &format!("crop={}:{BLOCK}:0:0,showinfo", BITS * BLOCK),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "pipe:1",
        ])
        .output()
        .context("ffmpeg decoder")?;
    let log = String::from_utf8_lossy(&out.stderr);
    // showinfo's integer `pts:` is in the stream's 90 kHz time base under -copyts.
    let pts: Vec<i64> = log
        .lines()
        .filter(|l| l.contains("showinfo") && l.contains(" pts_time:"))
        .filter_map(|l| {
            let rest = l.split(" pts:").nth(1)?;
            rest.split_whitespace().next()?.parse::<i64>().ok()
        })
        .map(|p| p / 90)
        .collect();
    let (w, h) = ((BITS * BLOCK) as usize, BLOCK as usize);
    let frames = out.stdout.chunks_exact(w * h);
    anyhow::ensure!(
        frames.len() == pts.len() && !pts.is_empty(),
        "decoded {} frames but {} timestamps",
        frames.len(),
        pts.len()
    );
    Ok(frames
        .zip(pts)
        .map(|(f, p)| {
            let row = &f[(h / 2) * w..];
            let code = (0..BITS)
                .filter(|k| row[(*k * BLOCK + BLOCK / 2) as usize] > 128)
                .fold(0i64, |v, k| v | 1 << k);
            (p, code)
        })
        .collect())
}

/// The offset A with capture ≡ PTS + A (mod 2^20 ms): the median over the frames read.
pub fn clock_offset(pairs: &[(i64, i64)]) -> Option<i64> {
    let first = pairs.first()?;
    let reference = (first.1 - first.0).rem_euclid(WRAP);
    // Each difference taken nearest the first one, so a wrap between frames does no harm.
    let mut d: Vec<i64> = pairs
        .iter()
        .map(|(p, c)| {
            let x = (c - p).rem_euclid(WRAP);
            reference + (x - reference + WRAP / 2).rem_euclid(WRAP) - WRAP / 2
        })
        .collect();
    d.sort_unstable();
    Some(d[d.len() / 2])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hls,
    LowLatency,
}

/// A frame's bytes as a player received them.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at_ms: i64,
    pub pts_ms: i64,
    /// Fetched when the player joined (0) or later.
    pub first_fetch: bool,
}

/// What one player session got.
#[derive(Debug, Default)]
pub struct Session {
    pub frames: Vec<Arrival>,
    /// The bytes fetched when joining, from a point that decodes on its own.
    pub start: Vec<u8>,
    pub hold_back_ms: i64,
}

#[derive(Debug, Clone)]
struct Item {
    seq: u64,
    part: Option<u64>,
    uri: String,
    duration_ms: f64,
    independent: bool,
}

#[derive(Debug, Default)]
struct Playlist {
    target_ms: f64,
    part_hold_back_ms: Option<f64>,
    segments: Vec<Item>,
    parts: Vec<Item>,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next()
    } else {
        rest.split(',').next()
    }
}

fn parse(text: &str) -> Playlist {
    let mut p = Playlist::default();
    let mut seq = 0u64;
    let mut part = 0u64;
    let mut duration = None;
    for l in text.lines().map(str::trim) {
        if let Some(v) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_ms = v.parse::<f64>().unwrap_or(0.0) * 1000.0;
        } else if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.parse().unwrap_or(0);
        } else if l.starts_with("#EXT-X-SERVER-CONTROL:") {
            p.part_hold_back_ms = attr(l, "PART-HOLD-BACK")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|s| s * 1000.0);
        } else if l.starts_with("#EXT-X-PART:") {
            if let (Some(d), Some(uri)) = (attr(l, "DURATION"), attr(l, "URI")) {
                p.parts.push(Item {
                    seq,
                    part: Some(part),
                    uri: uri.to_string(),
                    duration_ms: d.parse::<f64>().unwrap_or(0.0) * 1000.0,
                    independent: attr(l, "INDEPENDENT") == Some("YES"),
                });
                part += 1;
            }
        } else if let Some(v) = l.strip_prefix("#EXTINF:") {
            duration = v.split(',').next().and_then(|d| d.parse::<f64>().ok());
        } else if !l.starts_with('#') && !l.is_empty() {
            if let Some(d) = duration.take() {
                p.segments.push(Item {
                    seq,
                    part: None,
                    uri: l.to_string(),
                    duration_ms: d * 1000.0,
                    independent: true,
                });
            }
            seq += 1;
            part = 0;
        }
    }
    p
}

struct Player {
    http: reqwest::Client,
    url: String,
    base: String,
    session: Session,
}

impl Player {
    async fn playlist(&self, query: &str) -> anyhow::Result<Playlist> {
        let url = if query.is_empty() {
            self.url.clone()
        } else {
            format!("{}?{query}", self.url)
        };
        let r = self.http.get(&url).send().await?.error_for_status()?;
        Ok(parse(&r.text().await?))
    }

    async fn fetch(&mut self, item: &Item, first_fetch: bool) -> anyhow::Result<()> {
        let url = if item.uri.starts_with("http") {
            item.uri.clone()
        } else {
            format!("{}{}", self.base, item.uri)
        };
        let body = self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let at_ms = now_ms();
        for pts_ms in video_pts_ms(&body) {
            self.session.frames.push(Arrival {
                at_ms,
                pts_ms,
                first_fetch,
            });
        }
        if first_fetch {
            self.session.start.extend_from_slice(&body);
        }
        Ok(())
    }
}

/// Walks back from the end of `items` until `hold_back_ms` of media is covered.
fn start_index(items: &[Item], hold_back_ms: f64) -> usize {
    let mut covered = 0.0;
    let mut i = items.len();
    while i > 0 && covered < hold_back_ms {
        i -= 1;
        covered += items[i].duration_ms;
    }
    i
}

/// Plays `url` (a media playlist) for `secs` as an hls.js-like player in `mode`.
pub async fn play(url: &str, mode: Mode, secs: f64) -> anyhow::Result<Session> {
    let mut pl = Player {
        http: onda_shared::http::client_builder()
            .timeout(Duration::from_secs(20))
            .build()?,
        url: url.to_string(),
        base: url[..=url.rfind('/').unwrap_or(0)].to_string(),
        session: Session::default(),
    };
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let list = pl.playlist("").await?;
    match mode {
        Mode::Hls => {
            let hold_back = 3.0 * list.target_ms;
            pl.session.hold_back_ms = hold_back as i64;
            let from = start_index(&list.segments, hold_back);
            let mut last = None;
            for s in &list.segments[from..] {
                pl.fetch(s, true).await?;
                last = Some(s.seq);
            }
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let list = pl.playlist("").await?;
                for s in &list.segments {
                    if last.is_none_or(|l| s.seq > l) {
                        pl.fetch(s, false).await?;
                        last = Some(s.seq);
                    }
                }
            }
        }
        Mode::LowLatency => {
            let hold_back = list
                .part_hold_back_ms
                .context("the playlist has no PART-HOLD-BACK: not LL-HLS")?;
            pl.session.hold_back_ms = hold_back as i64;
            let mut from = start_index(&list.parts, hold_back);
            while from > 0 && !list.parts[from].independent {
                from -= 1;
            }
            anyhow::ensure!(!list.parts.is_empty(), "no parts listed");
            let mut last = (0, 0);
            for p in &list.parts[from..] {
                pl.fetch(p, true).await?;
                last = (p.seq, p.part.unwrap_or(0));
            }
            while Instant::now() < end {
                let query = format!("_HLS_msn={}&_HLS_part={}", last.0, last.1 + 1);
                let list = pl.playlist(&query).await?;
                for p in &list.parts {
                    let at = (p.seq, p.part.unwrap_or(0));
                    if at > last {
                        pl.fetch(p, false).await?;
                        last = at;
                    }
                }
            }
        }
    }
    Ok(pl.session)
}

/// Per frame shown after the join: its glass-to-glass latency (ms); and how often the player
/// stalled. `offset` maps PTS to capture time ([`clock_offset`]).
pub fn latencies(session: &Session, offset: i64) -> (Vec<f64>, usize) {
    let lat = |a: &Arrival| (a.at_ms - a.pts_ms - offset).rem_euclid(WRAP);
    let Some(edge) = session
        .frames
        .iter()
        .filter(|a| a.first_fetch)
        .map(|a| a.pts_ms)
        .max()
    else {
        return (Vec::new(), 0);
    };
    // The player shows first the frame `hold_back` behind the newest it found when joining.
    let target = edge - session.hold_back_ms;
    let Some(first) = session.frames.iter().position(|a| a.pts_ms >= target) else {
        return (Vec::new(), 0);
    };
    let mut shown = lat(&session.frames[first]);
    let (mut out, mut stalls) = (Vec::new(), 0);
    for a in &session.frames[first..] {
        let l = lat(a);
        // Not there when it was due: the player waits for it, and stays that far behind.
        if l > shown + 10 {
            stalls += 1;
            shown = l;
        }
        out.push(shown as f64);
    }
    (out, stalls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pts_of_video_pes_are_read_and_other_packets_skipped() {
        let mut ts = Vec::new();
        // A video PES start with PTS 90000 * 2 + 900 (2010 ms), no adaptation field.
        let mut p = vec![0x47, 0x41, 0x00, 0x10, 0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5];
        let pts: u64 = 180_900;
        p.extend_from_slice(&[
            0x21 | ((pts >> 29) as u8 & 0x0e),
            (pts >> 22) as u8,
            (pts >> 14) as u8 | 1,
            (pts >> 7) as u8,
            (pts << 1) as u8 | 1,
        ]);
        p.resize(188, 0xff);
        ts.extend_from_slice(&p);
        // An audio PES (0xC0) and a continuation packet are not video frames.
        let mut a = p.clone();
        a[7] = 0xc0;
        ts.extend_from_slice(&a);
        let mut c = p.clone();
        c[1] = 0x01;
        ts.extend_from_slice(&c);
        assert_eq!(video_pts_ms(&ts), [2010]);
    }

    #[test]
    fn the_clock_offset_survives_a_wrap() {
        let pairs = [(0, WRAP - 2), (33, 31), (66, 64), (100, 98)];
        let a = clock_offset(&pairs).expect("offset");
        assert_eq!(a.rem_euclid(WRAP), WRAP - 2);
    }

    #[test]
    fn ll_playlists_parse_to_parts_and_segments() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
            #EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-PART:DURATION=0.500,URI=\"7.0.ts\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.500,URI=\"7.1.ts\"\n#EXTINF:1.000,\n7.ts\n\
            #EXT-X-PART:DURATION=0.400,URI=\"8.0.ts\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"8.1.ts\"\n";
        let p = parse(text);
        assert_eq!(p.target_ms, 2000.0);
        assert_eq!(p.part_hold_back_ms, Some(1500.0));
        let parts: Vec<(u64, Option<u64>, bool)> = p
            .parts
            .iter()
            .map(|i| (i.seq, i.part, i.independent))
            .collect();
        assert_eq!(
            parts,
            [(7, Some(0), true), (7, Some(1), false), (8, Some(0), true)]
        );
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].seq, 7);
        assert_eq!(start_index(&p.parts, 900.0), 1);
    }

    #[test]
    fn latency_is_the_join_distance_and_grows_only_by_stalls() {
        // Frames every 100 ms captured at pts + 1000; joined with 300 ms hold-back.
        let mut s = Session {
            hold_back_ms: 300,
            ..Session::default()
        };
        for i in 0..10 {
            s.frames.push(Arrival {
                at_ms: 1000 + 1000 + 1000,
                pts_ms: i * 100,
                first_fetch: true,
            });
        }
        // Later frames arrive 200 ms after capture, then one 2 s late.
        for i in 10..20 {
            let late = if i == 15 { 2000 } else { 200 };
            s.frames.push(Arrival {
                at_ms: 1000 + i * 100 + late,
                pts_ms: i * 100,
                first_fetch: false,
            });
        }
        let (l, stalls) = latencies(&s, 1000);
        // Shown first: pts 600 at 3000 (captured 1600): 1400 ms behind.
        assert_eq!(l[0], 1400.0);
        assert_eq!(stalls, 1);
        assert_eq!(*l.last().expect("frames"), 2000.0);
    }
}

//! The HLS listener load generator of `bench-hls-audio`: many players of one live audio HLS
//! playlist, each on its own kept-alive HTTP/1.1 connection with a session token of its own,
//! doing what hls.js does: reload the playlist about once per target duration and fetch every
//! segment it has not fetched yet, starting three segments from the live edge. Each player's
//! segment bytes over a steady-state window are compared with the stream's bitrate.
//!
//! Hand-written over a TcpStream (as [`crate::load`] is) so that thousands of players cost the
//! generator little and each holds exactly one connection, as a browser tab does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct HlsPlan {
    /// `host:port`
    pub addr: String,
    /// The playlist's path, e.g. `/hls-audio/live/index.m3u8`.
    pub playlist: String,
    pub listeners: usize,
    /// Players start spread evenly over this time.
    pub ramp: Duration,
    pub settle: Duration,
    pub window: Duration,
    pub bitrate_kbps: u64,
}

#[derive(Debug, Clone, Default)]
pub struct HlsReport {
    pub listeners: usize,
    /// Players whose segment bytes in the window were at least `kept_ratio` of the bitrate.
    pub kept_up: usize,
    pub failed: usize,
    pub requests: u64,
    pub min_rate_ratio: f64,
    pub median_rate_ratio: f64,
}

/// A player counts as keeping up at this share of the bitrate: a player holds about one segment
/// ahead, so in a window of a few segments its count of whole segments varies by one.
pub const KEPT_RATIO: f64 = 0.75;

struct Slot {
    bytes: AtomicU64,
    requests: AtomicU64,
    /// 0 starting, 1 playing, 2 failed.
    state: AtomicU8,
}

/// One HTTP/1.1 exchange on a kept-alive connection: the status and the body.
async fn exchange(
    conn: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: onda-hls-loadgen\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    while !head.ends_with(b"\r\n\r\n") {
        let b = conn.read_u8().await?;
        head.push(b);
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("response head too long"));
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| std::io::Error::other("no Content-Length"))?;
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await?;
    Ok((status, body))
}

/// The segment URIs of a playlist with their numbers, and its target duration.
fn segments(playlist: &str) -> (Vec<(u64, String)>, Duration) {
    let target = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4);
    let list = playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| Some((l.split('.').next()?.parse().ok()?, l.to_string())))
        .collect();
    (list, Duration::from_secs(target))
}

async fn play(plan: Arc<HlsPlan>, id: usize, slot: Arc<Slot>) {
    let fail = |slot: &Slot| slot.state.store(2, Ordering::Relaxed);
    let Ok(stream) = TcpStream::connect(&plan.addr).await else {
        return fail(&slot);
    };
    let mut conn = BufReader::with_capacity(64 * 1024, stream);
    let base = plan
        .playlist
        .rsplit_once('/')
        .map_or("", |(b, _)| b)
        .to_string();
    let list_path = format!("{}?s=load{id}", plan.playlist);
    let mut next: Option<u64> = None;
    loop {
        let started = Instant::now();
        let Ok((200, body)) = exchange(&mut conn, &plan.addr, &list_path).await else {
            return fail(&slot);
        };
        slot.requests.fetch_add(1, Ordering::Relaxed);
        let (list, target) = segments(&String::from_utf8_lossy(&body));
        // Start three segments from the live edge, as hls.js does.
        let from = next.unwrap_or_else(|| {
            list.len()
                .checked_sub(3)
                .and_then(|i| list.get(i))
                .or(list.first())
                .map_or(0, |s| s.0)
        });
        for (seq, uri) in list.iter().filter(|(seq, _)| *seq >= from) {
            let Ok((200, seg)) = exchange(&mut conn, &plan.addr, &format!("{base}/{uri}")).await
            else {
                return fail(&slot);
            };
            slot.requests.fetch_add(1, Ordering::Relaxed);
            slot.bytes.fetch_add(seg.len() as u64, Ordering::Relaxed);
            slot.state.store(1, Ordering::Relaxed);
            next = Some(seq + 1);
        }
        tokio::time::sleep_until((started + target).into()).await;
    }
}

/// Runs the plan and reports; every player stops when it returns.
pub async fn run(plan: &HlsPlan) -> HlsReport {
    let t0 = Instant::now();
    let shared = Arc::new(plan.clone());
    let slots: Vec<Arc<Slot>> = (0..plan.listeners)
        .map(|_| {
            Arc::new(Slot {
                bytes: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                state: AtomicU8::new(0),
            })
        })
        .collect();
    let gap = plan.ramp / plan.listeners.max(1) as u32;
    let mut tasks = Vec::with_capacity(plan.listeners);
    for (i, slot) in slots.iter().enumerate() {
        if !gap.is_zero() {
            tokio::time::sleep_until((t0 + gap * i as u32).into()).await;
        }
        tasks.push(tokio::spawn(play(shared.clone(), i, slot.clone())));
    }
    tokio::time::sleep_until((t0 + plan.ramp + plan.settle).into()).await;
    let start: Vec<u64> = slots
        .iter()
        .map(|s| s.bytes.load(Ordering::Relaxed))
        .collect();
    let w0 = Instant::now();
    tokio::time::sleep(plan.window).await;
    let secs = w0.elapsed().as_secs_f64();
    for t in &tasks {
        t.abort();
    }
    let expected = plan.bitrate_kbps as f64 * 1000.0 / 8.0;
    let mut report = HlsReport {
        listeners: plan.listeners,
        ..HlsReport::default()
    };
    let mut ratios = Vec::new();
    for (slot, before) in slots.iter().zip(start) {
        report.requests += slot.requests.load(Ordering::Relaxed);
        if slot.state.load(Ordering::Relaxed) != 1 {
            report.failed += 1;
            continue;
        }
        let ratio = (slot.bytes.load(Ordering::Relaxed) - before) as f64 / secs / expected;
        if ratio >= KEPT_RATIO {
            report.kept_up += 1;
        }
        ratios.push(ratio);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    report.min_rate_ratio = ratios.first().copied().unwrap_or(0.0);
    report.median_rate_ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
    report
}

#[cfg(test)]
mod tests {
    use super::segments;
    use std::time::Duration;

    #[test]
    fn reads_segment_numbers_and_the_target() {
        let list =
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:3.997,T\n17.mp3\n#EXTINF:3.997,\n18.mp3\n";
        let (segs, target) = segments(list);
        assert_eq!(segs, vec![(17, "17.mp3".into()), (18, "18.mp3".into())]);
        assert_eq!(target, Duration::from_secs(4));
    }
}

//! The listener load generator used by the benchmarks: many concurrent HTTP listeners on one
//! stream, each checked against the stream's bitrate over a steady-state window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// `host:port`
    pub addr: String,
    pub path: String,
    pub listeners: usize,
    /// Connections are spread evenly over this time (0 = all at once: a storm).
    pub ramp: Duration,
    /// After the ramp, how long to wait before measuring.
    pub settle: Duration,
    /// The measured window.
    pub window: Duration,
    pub bitrate_kbps: u64,
}

/// Per-listener state the driver samples.
struct Slot {
    bytes: AtomicU64,
    /// 0 connecting, 1 streaming, 2 refused or failed, 3 ended early.
    state: AtomicU8,
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub listeners: usize,
    pub streaming: usize,
    pub failed: usize,
    pub ended_early: usize,
    /// Listeners whose rate in the window was at least 90 % of the bitrate.
    pub kept_up: usize,
    pub min_rate_ratio: f64,
    pub median_rate_ratio: f64,
    /// Time from the first connect to the last listener's first audio byte.
    pub all_connected_after: Option<Duration>,
}

async fn listen(
    addr: String,
    path: String,
    slot: Arc<Slot>,
    first_byte: Arc<AtomicU64>,
    t0: Instant,
) {
    let fail = |slot: &Slot| slot.state.store(2, Ordering::Relaxed);
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return fail(&slot);
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: onda-loadgen\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return fail(&slot);
    }
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    let body = loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return fail(&slot),
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    break head.len() - (i + 4);
                }
                if head.len() > 16384 {
                    return fail(&slot);
                }
            }
        }
    };
    if !(head.starts_with(b"HTTP/1.0 200")
        || head.starts_with(b"HTTP/1.1 200")
        || head.starts_with(b"ICY 200"))
    {
        return fail(&slot);
    }
    slot.state.store(1, Ordering::Relaxed);
    slot.bytes.fetch_add(body as u64, Ordering::Relaxed);
    first_byte.fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => {
                slot.state.store(3, Ordering::Relaxed);
                return;
            }
            Ok(n) => {
                slot.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the plan and reports; every connection is closed when it returns.
pub async fn run(plan: &LoadPlan) -> LoadReport {
    let t0 = Instant::now();
    let first_byte = Arc::new(AtomicU64::new(0));
    let slots: Vec<Arc<Slot>> = (0..plan.listeners)
        .map(|_| {
            Arc::new(Slot {
                bytes: AtomicU64::new(0),
                state: AtomicU8::new(0),
            })
        })
        .collect();
    let mut tasks = Vec::with_capacity(plan.listeners);
    let gap = if plan.listeners > 0 {
        plan.ramp / plan.listeners as u32
    } else {
        Duration::ZERO
    };
    for (i, slot) in slots.iter().enumerate() {
        if !gap.is_zero() {
            tokio::time::sleep_until((t0 + gap * i as u32).into()).await;
        }
        tasks.push(tokio::spawn(listen(
            plan.addr.clone(),
            plan.path.clone(),
            slot.clone(),
            first_byte.clone(),
            t0,
        )));
    }
    tokio::time::sleep_until((t0 + plan.ramp + plan.settle).into()).await;
    let start: Vec<u64> = slots
        .iter()
        .map(|s| s.bytes.load(Ordering::Relaxed))
        .collect();
    let w0 = Instant::now();
    tokio::time::sleep(plan.window).await;
    let secs = w0.elapsed().as_secs_f64();
    let expected = plan.bitrate_kbps as f64 * 1000.0 / 8.0;
    let mut ratios = Vec::new();
    let mut report = LoadReport {
        listeners: plan.listeners,
        ..LoadReport::default()
    };
    for (slot, before) in slots.iter().zip(start) {
        match slot.state.load(Ordering::Relaxed) {
            1 => {
                report.streaming += 1;
                let rate = (slot.bytes.load(Ordering::Relaxed) - before) as f64 / secs;
                let ratio = rate / expected;
                if ratio >= 0.9 {
                    report.kept_up += 1;
                }
                ratios.push(ratio);
            }
            3 => report.ended_early += 1,
            _ => report.failed += 1,
        }
    }
    for t in tasks {
        t.abort();
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    report.min_rate_ratio = ratios.first().copied().unwrap_or(0.0);
    report.median_rate_ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
    if report.streaming + report.ended_early == plan.listeners {
        report.all_connected_after =
            Some(Duration::from_millis(first_byte.load(Ordering::Relaxed)));
    }
    report
}

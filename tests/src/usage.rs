//! Usage metering tests' tools: listeners that record exactly what they received and for how
//! long (the ground truth billing is compared with), a UDP relay that can cut the control
//! channel (a partition on loopback), and readers of what the control plane billed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

/// What one listener got.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listened {
    /// Audio bytes received (the response body).
    pub bytes: u64,
    /// From the connect to the hang-up (or the server's end of the stream).
    pub time: Duration,
    /// The server ended the stream before the listener hung up.
    pub cut: bool,
}

/// Listens to `http://addr/path` for `duration` (or until the server ends the stream), then
/// hangs up with a reset, as a player closing with unread audio does. None: not admitted.
pub async fn listen_for(addr: &str, path: &str, duration: Duration) -> Option<Listened> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: onda-usage-test\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 16384];
    let mut head = Vec::new();
    let mut body = loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.0 200") && !head.starts_with(b"HTTP/1.1 200") {
                return None;
            }
            break (head.len() - (i + 4)) as u64;
        }
        if head.len() > 16384 {
            return None;
        }
    };
    let deadline = tokio::time::Instant::from_std(t0 + duration);
    let cut = loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break true,
                Ok(n) => body += n as u64,
            },
            () = tokio::time::sleep_until(deadline) => break false,
        }
    };
    let time = t0.elapsed();
    let _ = s.set_zero_linger();
    drop(s);
    Some(Listened {
        bytes: body,
        time,
        cut,
    })
}

/// A UDP relay in front of a control plane's QUIC port: agents connect to [`UdpRelay::addr`];
/// [`UdpRelay::cut`] drops every datagram both ways (a partition) until [`UdpRelay::heal`].
pub struct UdpRelay {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpRelay {
    pub async fn start(upstream: SocketAddr) -> UdpRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let addr = front.local_addr().expect("relay addr");
        let blocked = Arc::new(AtomicBool::new(false));
        let flag = blocked.clone();
        let task = tokio::spawn(async move {
            // One upstream socket per client address, each with a task carrying replies back.
            let mut backs: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
                std::collections::HashMap::new();
            let mut tasks = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    return;
                };
                if flag.load(Ordering::Relaxed) {
                    continue;
                }
                let back = match backs.get(&from) {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
                        b.connect(upstream).await.expect("connect upstream");
                        let (b2, front2, flag2) = (b.clone(), front.clone(), flag.clone());
                        tasks.push(AbortOnDrop(tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = b2.recv(&mut buf).await {
                                if !flag2.load(Ordering::Relaxed) {
                                    let _ = front2.send_to(&buf[..n], from).await;
                                }
                            }
                        })));
                        backs.insert(from, b.clone());
                        b
                    }
                };
                let _ = back.send(&buf[..n]).await;
            }
        });
        UdpRelay {
            addr,
            blocked,
            task,
        }
    }

    pub fn cut(&self) {
        self.blocked.store(true, Ordering::Relaxed);
    }

    pub fn heal(&self) {
        self.blocked.store(false, Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reports still in an agent's spool (open or sealed, not yet acknowledged).
pub fn spooled_reports(agent_dir: &std::path::Path) -> usize {
    std::fs::read_dir(agent_dir.join("state/usage"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// The sums a list of listeners got.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Truth {
    pub sessions: u64,
    pub listener_ms: u64,
    pub bytes: u64,
}

pub fn truth(listened: &[Listened]) -> Truth {
    Truth {
        sessions: listened.len() as u64,
        listener_ms: listened.iter().map(|l| l.time.as_millis() as u64).sum(),
        bytes: listened.iter().map(|l| l.bytes).sum(),
    }
}

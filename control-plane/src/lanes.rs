//! Two lanes for the control plane's HTTP connections, a bulkhead: the public now-playing feeds
//! (`GET /api/nowplaying/{station}/events`, unauthenticated and by the ten thousand) are served
//! on a runtime of their own, one thread at a lower CPU priority, and everything else (the panel
//! API, the redirector, the public JSON, the cluster's own tasks) on the main runtime. A change
//! of a station's now-playing wakes every feed and writes to every socket; on its own thread
//! that work yields the CPU to a panel request instead of queueing it behind thousands of feed
//! tasks (`scripts/bench-nowplaying.sh` measures it).
//!
//! Written by hand because neither axum nor hyper picks a runtime per connection by its
//! request: the accept loop peeks at the request line (without reading it), hands the socket to
//! its lane, and each lane is an `axum::serve` over a [`Lane`] listener with the same router, so
//! both keep axum's connection handling and graceful shutdown.

use crate::connections::{Connections, Cuttable};
use axum::Router;
use axum::serve::ListenerExt as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The most of a request line looked at; a feed's is far shorter.
const PEEK: usize = 512;
/// How long a connection may take to send its request line before it goes to the main lane
/// (where hyper's own timeouts apply).
const CLASSIFY_WITHIN: Duration = Duration::from_millis(500);
/// Added to the feed thread's nice value.
const FEED_NICE: i32 = 10;
/// Sockets waiting for their lane.
const QUEUE: usize = 1024;

/// Is this request line the one of a now-playing feed?
fn is_feed(line: &[u8]) -> bool {
    let Some(target) = line.strip_prefix(b"GET ") else {
        return false;
    };
    let path = target
        .split(|&b| b == b' ' || b == b'?')
        .next()
        .unwrap_or_default();
    path.starts_with(b"/api/nowplaying/") && path.ends_with(b"/events")
}

/// Which lane a new connection goes to, from its request line as far as it has arrived.
async fn feed_connection(stream: &TcpStream) -> bool {
    let mut buf = [0u8; PEEK];
    let deadline = tokio::time::Instant::now() + CLASSIFY_WITHIN;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        // Empty lines before a request are allowed (RFC 9112, 2.2), and so is a bare LF.
        let start = buf[..n]
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(n);
        let seen = &buf[start..n];
        if let Some(end) = seen.iter().position(|&b| b == b'\n') {
            return is_feed(seen[..end].strip_suffix(b"\r").unwrap_or(&seen[..end]));
        }
        if n == PEEK || tokio::time::Instant::now() >= deadline {
            return false;
        }
        // Part of the line: peeking again at once would return the same bytes.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One lane's listener: the sockets the accept loop sent it, registered with the runtime that
/// accepts them and with the server's [`Connections`] (so one can be cut).
struct Lane {
    rx: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
    connections: Connections,
}

impl axum::serve::Listener for Lane {
    type Io = Cuttable;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Cuttable, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.rx.recv().await else {
                // The accept loop has stopped: so does this lane, by its shutdown signal.
                std::future::pending::<()>().await;
                continue;
            };
            match TcpStream::from_std(stream) {
                Ok(s) => {
                    // Small writes go at once (as Node's HTTP server and the edge do): with
                    // Nagle's algorithm a gateway event written while the previous one is not yet
                    // acknowledged waits for that acknowledgement, which a client may delay.
                    let _ = s.set_nodelay(true);
                    return (self.connections.track(s, peer), peer);
                }
                Err(e) => tracing::debug!("cannot take a connection from {peer}: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts on `listener` until `stop`, sending each socket to its lane.
async fn accept_loop(
    listener: TcpListener,
    main: mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
    feeds: mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a connection reset before it was taken: wait a little
                // rather than spin (as axum's own accept loop does).
                tracing::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (main, feeds) = (main.clone(), feeds.clone());
        tokio::spawn(async move {
            let lane = if feed_connection(&stream).await {
                feeds
            } else {
                main
            };
            if let Ok(std) = stream.into_std() {
                let _ = lane.send((std, peer)).await;
            }
        });
    }
}

/// Lowers the calling thread's CPU priority (Linux: a nice value per thread).
fn lower_priority() {
    let tid = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(Some(tid), now + FEED_NICE) {
        tracing::debug!("cannot lower the feed thread's priority: {e}");
    }
}

/// Serves `app` on `listener` in two lanes until `shutdown` resolves, then drains both
/// (open feeds must be ended by their hub first: they never end by themselves). Every
/// connection is tracked in `connections`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    connections: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let (main_tx, main_rx) = mpsc::channel(QUEUE);
    let (feeds_tx, feeds_rx) = mpsc::channel(QUEUE);
    let stop = CancellationToken::new();
    // However this future ends (even dropped), the accept loop and the feed lane end with it.
    let _stop_on_drop = stop.clone().drop_guard();
    let accepting = tokio::spawn(accept_loop(listener, main_tx, feeds_tx, stop.clone()));

    // A connection of the feed lane serves one feed: any other answer closes it, so a client
    // that goes on to other requests makes a new connection (and lands in the main lane).
    let feeds_app = app.clone().layer(axum::middleware::map_response(
        |mut resp: axum::response::Response| async move {
            let streaming = resp
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
            if !streaming {
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            resp
        },
    ));
    let feeds_stop = stop.clone();
    let feeds_connections = connections.clone();
    let (feeds_done_tx, feeds_done) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    std::thread::Builder::new()
        .name("onda-feeds".to_string())
        .spawn(move || {
            lower_priority();
            // Built and dropped on this thread: a runtime may not be dropped inside another.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = feeds_done_tx.send(Err(e));
                    return;
                }
            };
            let served = rt.block_on(async move {
                let lane = Lane {
                    rx: feeds_rx,
                    local,
                    connections: feeds_connections,
                }
                .tap_io(|_| {});
                axum::serve(
                    lane,
                    feeds_app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move { feeds_stop.cancelled().await })
                .await
            });
            let _ = feeds_done_tx.send(served);
        })?;

    let lane = Lane {
        rx: main_rx,
        local,
        connections,
    }
    .tap_io(|_| {});
    let main_stop = stop.clone();
    let served = axum::serve(
        lane,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        main_stop.cancel();
    })
    .await;
    stop.cancel();
    let _ = accepting.await;
    let feeds = feeds_done.await.unwrap_or(Ok(()));
    served.and(feeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_feed_requests_take_the_feed_lane() {
        assert!(is_feed(b"GET /api/nowplaying/x/events HTTP/1.1"));
        assert!(is_feed(b"GET /api/nowplaying/jazz/events HTTP/1.1"));
        assert!(is_feed(b"GET /api/nowplaying/jazz/events?x=1 HTTP/1.1"));
        assert!(!is_feed(b"GET /api/nowplaying/jazz HTTP/1.1"));
        assert!(!is_feed(b"POST /api/nowplaying/jazz/events HTTP/1.1"));
        assert!(!is_feed(b"GET /v1/stations HTTP/1.1"));
        assert!(!is_feed(b"GET /api/nowplaying/events-fm/x HTTP/1.1"));
        assert!(!is_feed(b""));
    }
}

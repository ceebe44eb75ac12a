//! The edge's HTTP layer: the accept loop, the connection limits and the header timeout, the
//! request head, and complete responses. It knows nothing of mounts or streams: a [`Service`]
//! says what the limits are, which requests are exempt from the per-address limit, and answers
//! each request.
//!
//! Hand-written on tokio and httparse rather than on hyper because Icecast clients need what a
//! general HTTP server does not give: the `SOURCE` method and `ICE/1.0` version, request bodies
//! that run until the connection closes with neither Content-Length nor chunking, a `100
//! Continue` sent only after authentication, and per-listener control of queues and writes.

pub(crate) mod chunked;
pub(crate) mod cors;
pub(crate) mod head;

use crate::sync::lock;
use bytes::BytesMut;
use head::{HeadError, RequestHead};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// The connection limits in force when a connection arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: u64,
    /// 0: no limit.
    pub(crate) max_connections_per_ip: u64,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) header_timeout: Duration,
}

/// What answers the requests of an HTTP listener.
pub(crate) trait Service: Send + Sync + 'static {
    fn limits(&self) -> Limits;
    /// Whether a request does not count against its address's limit (a relay pull: every pull
    /// of a peer node comes from one address).
    fn exempt(&self, head: &RequestHead) -> bool;
    /// Answers one request. The connection is the handler's from here on; it hands it back
    /// (Some) when it answered with [`reply`] and the client keeps the connection for another
    /// request.
    fn call(self: Arc<Self>, req: Request) -> impl Future<Output = Option<Request>> + Send;
}

/// Counters of an HTTP listener.
#[derive(Clone)]
pub(crate) struct Counters {
    /// Connections refused by the limits.
    pub(crate) refused: prometheus::IntCounter,
    pub(crate) connections: prometheus::IntCounter,
    pub(crate) requests: prometheus::IntCounter,
}

/// How long a kept-alive connection may wait for its next request head. LL-HLS players ask
/// every part (a second or less); a player gone quiet for longer reconnects when it returns.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(15);

/// A parsed request with its connection and the body bytes read along with the head.
pub(crate) struct Request {
    pub(crate) head: RequestHead,
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) leftover: BytesMut,
    /// The client keeps the connection for another request after this one's answer
    /// (HTTP/1.1 without `Connection: close`, or 1.0 with `Connection: keep-alive`, and no
    /// request body); cleared once an answer closes it.
    pub(crate) persist: bool,
    /// The connection's place under the connection limits: it counts for as long as this
    /// lives, in the request or in whatever took the connection over (a listener).
    pub(crate) conn: Option<ConnGuard>,
}

impl Request {
    fn new(head: RequestHead, stream: TcpStream, peer: SocketAddr, leftover: BytesMut) -> Self {
        let persist = wants_keep_alive(&head);
        Request {
            head,
            stream,
            peer,
            leftover,
            persist,
            conn: None,
        }
    }
}

/// Whether a request lets its connection carry another one after it. A request with a body
/// does not: its body would be read as the next head.
fn wants_keep_alive(head: &RequestHead) -> bool {
    let has_body = head.header("transfer-encoding").is_some()
        || head
            .header("content-length")
            .is_some_and(|v| v.trim() != "0");
    if has_body {
        return false;
    }
    let says = |token: &str| {
        head.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if head.minor_version >= 1 {
        !says("close")
    } else {
        says("keep-alive")
    }
}

/// The next connection on `listener` (with TCP_NODELAY), or None at shutdown. A failed
/// accept (out of file descriptors and the like) waits a moment instead of spinning.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts until `shutdown`, answering each request with `service`; connections beyond the
/// limits get a 503 and count in `refused`.
pub(crate) async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: CancellationToken,
    counters: Counters,
) {
    let conns = Arc::new(Conns {
        open: AtomicU64::new(0),
        per_ip: Mutex::new(HashMap::new()),
        counters,
    });
    while let Some((stream, peer)) = next_connection(&listener, &shutdown, "HTTP").await {
        conns.counters.connections.inc();
        let span = tracing::info_span!("http", %peer);
        tokio::spawn(handle(stream, peer, service.clone(), conns.clone()).instrument(span));
    }
}

async fn handle<S: Service>(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: Arc<S>,
    conns: Arc<Conns>,
) {
    let limits = service.limits();
    let Some(mut guard) = conns.admit(peer.ip(), &limits) else {
        conns.refuse(&mut stream).await;
        return;
    };
    let read = tokio::time::timeout(
        limits.header_timeout,
        read_head(
            &mut stream,
            BytesMut::new(),
            limits.max_header_bytes,
            limits.max_headers,
        ),
    )
    .await;
    let Some((head, leftover)) = head_or_answer(&mut stream, read).await else {
        return;
    };
    if !guard.settle(
        service.exempt(&head),
        service.limits().max_connections_per_ip,
    ) {
        conns.refuse(&mut stream).await;
        return;
    }
    conns.counters.requests.inc();
    let mut req = Request::new(head, stream, peer, leftover);
    req.conn = Some(guard);
    // Whatever the exemption of the first request decided holds for the connection.
    while let Some(mut kept) = service.clone().call(req).await {
        let buf = std::mem::take(&mut kept.leftover);
        let limits = service.limits();
        let read = tokio::time::timeout(
            KEEP_ALIVE_IDLE,
            read_head(
                &mut kept.stream,
                buf,
                limits.max_header_bytes,
                limits.max_headers,
            ),
        )
        .await;
        // A kept connection that goes quiet is closed without an answer, as HTTP/1.1 allows.
        if read.is_err() {
            return;
        }
        let Some((head, leftover)) = head_or_answer(&mut kept.stream, read).await else {
            return;
        };
        conns.counters.requests.inc();
        req = Request::new(head, kept.stream, peer, leftover);
        req.conn = kept.conn.take();
    }
}

/// The head read, or None after answering why there is none (408, 431, 400; nothing when the
/// client closed first).
async fn head_or_answer(
    stream: &mut TcpStream,
    read: Result<Result<(RequestHead, BytesMut), Option<HeadError>>, tokio::time::error::Elapsed>,
) -> Option<(RequestHead, BytesMut)> {
    let (status, body) = match read {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(None)) => return None, // closed before sending anything
        Err(_) => (408, "Request head timeout\n".to_string()),
        Ok(Err(Some(e))) => {
            let status = match e {
                HeadError::TooLarge => 431,
                HeadError::TooManyHeaders => 431,
                HeadError::Malformed(_) => 400,
            };
            (status, format!("{e}\n"))
        }
    };
    let _ = respond(stream, status, "text/plain", &[], body.as_bytes()).await;
    None
}

/// Reads until a complete head; `Err(None)` when the peer closed first.
/// `buf` holds what was read past the previous request (a pipelined head).
async fn read_head(
    stream: &mut TcpStream,
    mut buf: BytesMut,
    max: usize,
    max_headers: usize,
) -> Result<(RequestHead, BytesMut), Option<HeadError>> {
    if !buf.is_empty()
        && let Some((head, used)) = head::parse(&buf, max, max_headers).map_err(Some)?
    {
        let _ = buf.split_to(used);
        return Ok((head, buf));
    }
    buf.reserve(1024);
    loop {
        let n = stream.read_buf(&mut buf).await.map_err(|_| None)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                None
            } else {
                Some(HeadError::Malformed(
                    "connection closed inside the request head".into(),
                ))
            });
        }
        if let Some((head, used)) = head::parse(&buf, max, max_headers).map_err(Some)? {
            let _ = buf.split_to(used);
            return Ok((head, buf));
        }
    }
}

/// The connections of one listener: how many are open, and per address.
struct Conns {
    open: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, PerIp>>,
    counters: Counters,
}

impl Conns {
    /// A new connection from `ip`, counted against the total and, while its head is read,
    /// against `ip`'s heads in flight; None when a limit is reached. Whether it counts as one of
    /// `ip`'s open connections is decided once its head is known ([`ConnGuard::settle`]).
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<ConnGuard> {
        if self.open.load(Ordering::Relaxed) >= limits.max_connections {
            return None;
        }
        let max = limits.max_connections_per_ip;
        let mut per_ip = lock(&self.per_ip);
        let n = per_ip.entry(ip).or_default();
        if max > 0 && n.heads >= max {
            return None;
        }
        n.heads += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnGuard {
            conns: self.clone(),
            ip,
            counted: Counted::Head,
        })
    }

    /// The answer to a connection beyond the limits.
    async fn refuse(&self, stream: &mut TcpStream) {
        self.counters.refused.inc();
        let _ = respond(stream, 503, "text/plain", &[], b"Too many connections\n").await;
    }
}

/// One address's connections: those whose head is being read, and those open past their
/// head that count against `max_connections_per_ip` (relay pulls do not).
#[derive(Debug, Default)]
struct PerIp {
    heads: u64,
    open: u64,
}

impl PerIp {
    fn is_empty(&self) -> bool {
        self.heads == 0 && self.open == 0
    }
}

/// What a connection counts as in its address's [`PerIp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Head,
    Open,
    Nothing,
}

/// Releases a connection's slot in the limits when the connection ends.
pub(crate) struct ConnGuard {
    conns: Arc<Conns>,
    ip: IpAddr,
    counted: Counted,
}

impl ConnGuard {
    /// The head is read: an exempt request is not counted against its address; any other
    /// counts as one of its address's open connections, or is refused (false) when the address
    /// has `max` open.
    fn settle(&mut self, exempt: bool, max: u64) -> bool {
        let mut per_ip = lock(&self.conns.per_ip);
        let n = per_ip.entry(self.ip).or_default();
        if self.counted == Counted::Head {
            n.heads = n.heads.saturating_sub(1);
        }
        let admitted = exempt || max == 0 || n.open < max;
        self.counted = if admitted && !exempt {
            n.open += 1;
            Counted::Open
        } else {
            Counted::Nothing
        };
        if n.is_empty() {
            per_ip.remove(&self.ip);
        }
        admitted
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = lock(&self.conns.per_ip);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            match self.counted {
                Counted::Head => n.heads = n.heads.saturating_sub(1),
                Counted::Open => n.open = n.open.saturating_sub(1),
                Counted::Nothing => {}
            }
            if n.is_empty() {
                per_ip.remove(&self.ip);
            }
        }
    }
}

pub(crate) const SERVER: &str = concat!(
    "Onda/",
    env!("CARGO_PKG_VERSION"),
    " (Icecast 2.4 compatible)"
);

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Authentication Required",
        403 => "Forbidden",
        404 => "File Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
/// Writes a complete HTTP/1.0 response and leaves the connection to be closed.
pub(crate) async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    respond_cached(
        stream,
        status,
        content_type,
        "no-cache",
        headers,
        body,
        false,
    )
    .await
}

/// [`respond`] with a `Cache-Control` of the caller's choice; `head_only` sends the headers
/// (Content-Length included) without the body, as a HEAD request asks.
pub(crate) async fn respond_cached(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    cache_control: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let answer = Answer {
        status,
        content_type,
        cache_control,
        headers,
        body,
        head_only,
    };
    write(stream, &answer.bytes("HTTP/1.0", "Close")).await?;
    close_gracefully(stream).await;
    Ok(())
}

/// A complete response.
pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    pub(crate) content_type: &'a str,
    pub(crate) cache_control: &'a str,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) body: &'a [u8],
    /// Headers only (Content-Length included), as a HEAD request asks.
    pub(crate) head_only: bool,
}

impl Answer<'_> {
    fn bytes(&self, version: &str, connection: &str) -> Vec<u8> {
        let mut out = format!(
            "{version} {} {}\r\nServer: {SERVER}\r\nConnection: {connection}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.cache_control,
        );
        cors::push_lines(&mut out, cors::RESPONSE);
        cors::push_lines(&mut out, self.headers);
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body);
        }
        bytes
    }
}

/// Answers `req`: over HTTP/1.1 on a connection kept for the client's next request when it
/// asked for that ([`Request::persist`]), else as [`respond_cached`] does. A failed write
/// closes the connection.
pub(crate) async fn reply(req: &mut Request, answer: &Answer<'_>) -> std::io::Result<()> {
    if !req.persist {
        return respond_cached(
            &mut req.stream,
            answer.status,
            answer.content_type,
            answer.cache_control,
            answer.headers,
            answer.body,
            answer.head_only,
        )
        .await;
    }
    let written = write(&mut req.stream, &answer.bytes("HTTP/1.1", "keep-alive")).await;
    if written.is_err() {
        req.persist = false;
    }
    written
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    // A client that stops reading must not hold its connection slot forever.
    tokio::time::timeout(Duration::from_secs(10), stream.write_all(bytes))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "response write stalled")
        })??;
    stream.flush().await
}

/// Sends FIN and discards what the client still sends (a refused source's audio, the rest of
/// an oversized head) for a moment, so closing does not turn into a reset that destroys the
/// response before the client has read it.
pub(crate) async fn close_gracefully(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        // On the heap, and only while draining: an array here would sit in the future of every
        // connection that might close this way, listeners included (8 KiB each).
        let mut buf = vec![0u8; 8192];
        let mut total = 0usize;
        while total < 256 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that answers nothing: what is measured is the connection's own part.
    struct Silent;

    impl Service for Silent {
        fn limits(&self) -> Limits {
            Limits {
                max_connections: 1,
                max_connections_per_ip: 0,
                max_header_bytes: 1024,
                max_headers: 8,
                header_timeout: Duration::from_secs(1),
            }
        }
        fn exempt(&self, _: &RequestHead) -> bool {
            false
        }
        async fn call(self: Arc<Self>, _req: Request) -> Option<Request> {
            None
        }
    }

    /// A connection's task holds this future as long as the connection lives, besides its
    /// handler's: it must not carry buffers of the rare paths (an error answer's drain was an
    /// 8 KiB array in it, in every listener's task).
    #[tokio::test]
    async fn a_connections_own_future_is_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let counter = prometheus::IntCounter::new("c", "c").expect("counter");
        let conns = Arc::new(Conns {
            open: AtomicU64::new(0),
            per_ip: Mutex::new(HashMap::new()),
            counters: Counters {
                refused: counter.clone(),
                connections: counter.clone(),
                requests: counter,
            },
        });
        let task = handle(stream, addr, Arc::new(Silent), conns);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "{size} bytes");
    }
}

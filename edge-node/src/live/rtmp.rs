//! The RTMP ingest: handshake, chunk stream and AMF0 commands (connect, releaseStream,
//! createStream, publish) through rml_rtmp's server session, as OBS and ffmpeg send them. The
//! publish name is the stream key: an unknown key, a stream that is already live, a request
//! to play, or media that is not H.264/AAC is refused and the connection closed.
//!
//! rml_rtmp 0.8 is unmaintained and panics on some malformed input (a second chunk stream
//! starting while a message is partial, an AMF0 command of fewer than three values): every call
//! into it is contained ([`contained`]), so such input ends only its own connection, and a
//! claimed stream is held by a [`Publishing`] guard that releases it on every way out.

use super::Live;
use super::flv::TagKind;
use super::{LiveStream, Refusal};
use crate::config::Current;
use crate::metrics::EdgeMetrics;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Bytes a connection may send before it publishes (connect and publish commands are small):
/// anything beyond is not a publisher.
const MAX_BEFORE_PUBLISH: u64 = 1 << 20;

/// A publisher's media is read at most once per tick, on a grid every connection shares: an
/// encoder writes each frame as it comes (about 80 writes a second for 30 fps video with
/// audio), and waking for each costs more than the media does; on a shared grid one wake-up
/// reads every publisher's last 40 ms. That is a fifth of the shortest part, and at 2.5 Mbit/s
/// 12 KiB waiting in the socket. A read that fills the buffer is followed by another at once.
const INGEST_TICK: Duration = Duration::from_millis(40);

/// The next instant on the ingest grid.
fn next_tick(now: tokio::time::Instant) -> tokio::time::Instant {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| now);
    let tick = INGEST_TICK.as_nanos();
    let ticks = (now.duration_since(start).as_nanos() / tick + 1) as u64;
    start + Duration::from_nanos(ticks.saturating_mul(tick as u64))
}

/// What the RTMP ingest works with: the live streams it feeds, and the node's configuration,
/// metrics and shutdown.
pub(crate) struct Ingest {
    pub(crate) live: Arc<Live>,
    config: Arc<Current>,
    metrics: Arc<EdgeMetrics>,
    shutdown: CancellationToken,
    next_id: std::sync::atomic::AtomicU64,
}

impl Ingest {
    pub(crate) fn new(
        live: Arc<Live>,
        config: Arc<Current>,
        metrics: Arc<EdgeMetrics>,
        shutdown: CancellationToken,
    ) -> Ingest {
        Ingest {
            live,
            config,
            metrics,
            shutdown,
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn config(&self) -> Arc<crate::config::EdgeConfig> {
        self.config.get()
    }

    /// The connection's number, as `clientid` in the webhooks.
    fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Accepts publishers until shutdown.
pub(crate) async fn serve(listener: TcpListener, ingest: Arc<Ingest>) {
    while let Some((stream, peer)) =
        crate::http::next_connection(&listener, &ingest.shutdown, "RTMP").await
    {
        let ingest = ingest.clone();
        let span = tracing::info_span!("rtmp", %peer);
        tokio::spawn(
            async move {
                let conn = ingest.next_id();
                // Dropped with the task whichever way it ends, releasing a claimed stream.
                let mut publishing: Option<Publishing> = None;
                if let Err(e) = session(stream, peer, &ingest, conn, &mut publishing).await {
                    tracing::info!("RTMP connection ended: {e}");
                }
            }
            .instrument(span),
        );
    }
}

/// A stream claimed by connection `conn`. Dropping it releases the claim: at the end of the
/// publish, on an error, and when the connection's task panics or is cancelled, so a stream is
/// never left claimed by a connection that is gone.
pub(crate) struct Publishing {
    pub stream: Arc<LiveStream>,
    ingest: Arc<Ingest>,
    peer: SocketAddr,
    conn: u64,
    app: String,
    /// The publish was accepted (renditions started, `on_publish_done` owed).
    accepted: bool,
}

impl Publishing {
    /// Claims `stream` for connection `conn` with `key`.
    pub(crate) fn claim(
        stream: Arc<LiveStream>,
        ingest: &Arc<Ingest>,
        peer: SocketAddr,
        conn: u64,
        app: &str,
        key: &str,
    ) -> Result<(Publishing, CancellationToken), Refusal> {
        let kick = stream.claim(conn, key)?;
        let guard = Publishing {
            stream,
            ingest: ingest.clone(),
            peer,
            conn,
            app: app.to_string(),
            accepted: false,
        };
        Ok((guard, kick))
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        let s = &self.stream;
        s.release(self.conn);
        if self.accepted {
            tracing::info!(stream = %s.name, "publisher left");
            if s.parent.is_none() {
                self.ingest.live.end_renditions(s);
                publish_done(&self.ingest, self.peer, self.conn, &self.app, &s.name);
            }
        }
    }
}

thread_local! {
    /// Set while this thread runs a call into rml_rtmp; the place of a panic in it.
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Wraps the process's panic hook once: a panic inside a contained call is not printed (with
/// a backtrace, per malformed connection) but recorded for the connection's log line.
fn quiet_contained_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINING.with(std::cell::Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs one call into rml_rtmp, turning a panic inside it into the end of this connection
/// only (the session's state is unknown afterwards, so the connection is not used again).
fn contained<T>(what: &'static str, f: impl FnOnce() -> T) -> Result<T, End> {
    quiet_contained_panics();
    CONTAINING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(false));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = PANIC_AT.with(|p| std::mem::take(&mut *p.borrow_mut()));
        End::Panicked(what, format!("{msg} at {at}"))
    })
}

/// Why a session ended, for the log.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no data for {0:?}")]
    Timeout(Duration),
    #[error("handshake failed: {0:?}")]
    Handshake(rml_rtmp::handshake::HandshakeError),
    #[error("invalid RTMP: {0:?}")]
    Protocol(rml_rtmp::sessions::ServerSessionError),
    #[error("{0}")]
    Refused(String),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the stream's key changed or the stream was removed")]
    Kicked,
    #[error("the server is shutting down")]
    Shutdown,
    #[error("malformed RTMP made the RTMP library fail in {0} ({1})")]
    Panicked(&'static str, String),
}

async fn read(stream: &mut TcpStream, buf: &mut [u8], limit: Duration) -> Result<usize, End> {
    match tokio::time::timeout(limit, stream.read(buf)).await {
        Err(_) => Err(End::Timeout(limit)),
        Ok(Ok(0)) => Err(End::Closed),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(End::Io(e)),
    }
}

async fn send(
    stream: &mut TcpStream,
    results: &mut VecDeque<ServerSessionResult>,
) -> Result<Vec<ServerSessionEvent>, End> {
    let mut events = Vec::new();
    while let Some(r) = results.pop_front() {
        match r {
            ServerSessionResult::OutboundResponse(p) => stream.write_all(&p.bytes).await?,
            ServerSessionResult::RaisedEvent(e) => events.push(e),
            ServerSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    Ok(events)
}

async fn session(
    mut stream: TcpStream,
    peer: SocketAddr,
    ingest: &Arc<Ingest>,
    conn: u64,
    publishing: &mut Option<Publishing>,
) -> Result<(), End> {
    let limits = ingest.config().limits.clone();
    let handshake_limit = limits.header_timeout();
    let idle_limit = limits.source_timeout();
    let mut buf = vec![0u8; 64 * 1024];
    let mut hs = Handshake::new(PeerType::Server);
    let leftover = loop {
        let n = read(&mut stream, &mut buf, handshake_limit).await?;
        match contained("the handshake", || hs.process_bytes(&buf[..n]))?.map_err(End::Handshake)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let (mut rtmp, initial) = contained("the session", || {
        ServerSession::new(ServerSessionConfig::new())
    })?
    .map_err(End::Protocol)?;
    let mut results: VecDeque<ServerSessionResult> = initial.into();
    results.extend(input_step(&mut rtmp, &leftover)?);
    let mut kick: Option<CancellationToken> = None;
    let mut received = leftover.len() as u64;
    let mut last = 0;
    loop {
        // Events can queue more output (accepting a request answers it), so drain until quiet;
        // a refusal is sent before the connection closes.
        let mut close = None;
        while !results.is_empty() {
            for event in send(&mut stream, &mut results).await? {
                let step =
                    on_event(&mut rtmp, event, ingest, conn, peer, publishing, &mut kick).await?;
                results.extend(step.out);
                close = close.or(step.close);
            }
        }
        if let Some(e) = close {
            let _ = stream.flush().await;
            crate::http::close_gracefully(&mut stream).await;
            return Err(e);
        }
        if publishing.is_none() && received > MAX_BEFORE_PUBLISH {
            return Err(End::Refused(format!(
                "{received} bytes without a publish: not an RTMP publisher"
            )));
        }
        let limit = if publishing.is_some() {
            idle_limit
        } else {
            handshake_limit
        };
        let kicked = async {
            match &kick {
                Some(k) => k.cancelled().await,
                None => std::future::pending().await,
            }
        };
        // Publishing and the last read did not fill the buffer: wait for the grid.
        let wait = (publishing.is_some() && last < buf.len())
            .then(|| next_tick(tokio::time::Instant::now()));
        let n = tokio::select! {
            r = async {
                if let Some(at) = wait {
                    tokio::time::sleep_until(at).await;
                }
                read(&mut stream, &mut buf, limit).await
            } => r?,
            () = kicked => return Err(End::Kicked),
            () = ingest.shutdown.cancelled() => return Err(End::Shutdown),
        };
        received += n as u64;
        last = n;
        results.extend(input_step(&mut rtmp, &buf[..n])?);
    }
}

/// Hands received bytes to the session (chunk deserializer, AMF0 decoding).
fn input_step(rtmp: &mut ServerSession, bytes: &[u8]) -> Result<Vec<ServerSessionResult>, End> {
    contained("the chunk or AMF0 decoder", || rtmp.handle_input(bytes))?.map_err(End::Protocol)
}

fn accept(rtmp: &mut ServerSession, request_id: u32) -> Result<Step, End> {
    contained("accepting a request", || rtmp.accept_request(request_id))?
        .map(Step::send)
        .map_err(End::Protocol)
}

/// What to send in answer to an event, and whether the connection ends after it.
#[derive(Default)]
struct Step {
    out: Vec<ServerSessionResult>,
    close: Option<End>,
}

impl Step {
    fn send(out: Vec<ServerSessionResult>) -> Step {
        Step { out, close: None }
    }
}

/// Reacts to one session event.
async fn on_event(
    rtmp: &mut ServerSession,
    event: ServerSessionEvent,
    ingest: &Arc<Ingest>,
    conn: u64,
    peer: SocketAddr,
    publishing: &mut Option<Publishing>,
    kick: &mut Option<CancellationToken>,
) -> Result<Step, End> {
    let refuse = |rtmp: &mut ServerSession, request_id, code: &str, why: String| {
        ingest.metrics.rtmp_refused.inc();
        tracing::info!("RTMP request refused: {why}");
        let out = contained("refusing a request", || {
            rtmp.reject_request(request_id, code, &why)
        })?
        .map_err(End::Protocol)?;
        Ok(Step {
            out,
            close: Some(End::Refused(why)),
        })
    };
    match event {
        ServerSessionEvent::ConnectionRequested { request_id, .. }
        | ServerSessionEvent::ReleaseStreamRequested { request_id, .. } => accept(rtmp, request_id),
        ServerSessionEvent::PublishStreamRequested {
            request_id,
            app_name,
            stream_key,
            ..
        } => {
            if publishing.is_some() {
                let why = "this connection already publishes a stream".to_string();
                return refuse(rtmp, request_id, "NetStream.Publish.BadName", why);
            }
            // OBS and ffmpeg may append a query to the key; the key is what precedes it.
            let key = stream_key.split('?').next().unwrap_or_default();
            let claimed = match ingest.live.by_key(key) {
                None => Err(Refusal::UnknownKey),
                // Renditions are fed by this node's own ffmpeg, never over RTMP.
                Some(s) if s.parent.is_some() => Err(Refusal::UnknownKey),
                Some(s) => Publishing::claim(s, ingest, peer, conn, &app_name, key),
            };
            // nginx-rtmp's on_publish: the publisher's own service decides too. The guard
            // releases the claim if it refuses, or if the connection goes away while it is
            // asked.
            let claimed = match claimed {
                Ok((g, k)) => {
                    match on_publish(ingest, peer, conn, &app_name, key, &g.stream.name).await {
                        Ok(()) => Ok((g, k)),
                        Err(why) => {
                            drop(g);
                            return refuse(rtmp, request_id, "NetStream.Publish.Unauthorized", why);
                        }
                    }
                }
                Err(r) => Err(r),
            };
            match claimed {
                Ok((mut g, k)) => {
                    tracing::info!(stream = %g.stream.name, "publisher connected");
                    g.accepted = true;
                    ingest.live.start_renditions(&g.stream);
                    *kick = Some(k);
                    *publishing = Some(g);
                    accept(rtmp, request_id)
                }
                Err(Refusal::UnknownKey) => refuse(
                    rtmp,
                    request_id,
                    "NetStream.Publish.BadName",
                    "unknown or revoked stream key".to_string(),
                ),
                Err(Refusal::NotOrigin) => refuse(
                    rtmp,
                    request_id,
                    "NetStream.Publish.BadName",
                    "this node relays the stream: publish to its origin (GET /v1/streams/{id}/ingest)"
                        .to_string(),
                ),
                Err(Refusal::AlreadyLive) => refuse(
                    rtmp,
                    request_id,
                    "NetStream.Publish.BadName",
                    "the stream already has a publisher".to_string(),
                ),
            }
        }
        ServerSessionEvent::PlayStreamRequested { request_id, .. } => refuse(
            rtmp,
            request_id,
            "NetStream.Play.Failed",
            "this server does not play RTMP: watch the stream over HLS".to_string(),
        ),
        ServerSessionEvent::VideoDataReceived {
            data, timestamp, ..
        } => media(publishing, conn, TagKind::Video, timestamp.value, &data)
            .map(|()| Step::default()),
        ServerSessionEvent::AudioDataReceived {
            data, timestamp, ..
        } => media(publishing, conn, TagKind::Audio, timestamp.value, &data)
            .map(|()| Step::default()),
        ServerSessionEvent::PublishStreamFinished { .. } => {
            // Dropping the guard releases the stream and tells on_publish_done.
            if let Some(g) = publishing.take() {
                tracing::info!(stream = %g.stream.name, "publish finished");
            }
            *kick = None;
            Ok(Step::default())
        }
        _ => Ok(Step::default()),
    }
}

/// The webhooks' HTTP client (one connection pool for the node).
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(onda_shared::http::client)
}

/// The form nginx-rtmp posts: `call`, `addr`, `clientid`, `app`, `name` (the stream key as
/// published), and `stream`, the stream's name on this node.
fn form(call: &str, peer: SocketAddr, conn: u64, app: &str, key: &str, stream: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("call", call)
        .append_pair("addr", &peer.ip().to_string())
        .append_pair("clientid", &conn.to_string())
        .append_pair("app", app)
        .append_pair("name", key)
        .append_pair("stream", stream)
        .finish()
}

/// Asks `rtmp.on_publish` (when set) whether this publish may go ahead: Err(why) unless it
/// answers 2xx within `rtmp.webhook_timeout_ms`.
async fn on_publish(
    ingest: &Arc<Ingest>,
    peer: SocketAddr,
    conn: u64,
    app: &str,
    key: &str,
    stream: &str,
) -> Result<(), String> {
    let cfg = ingest.config().rtmp.clone();
    let Some(url) = cfg.on_publish else {
        return Ok(());
    };
    let sent = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form("publish", peer, conn, app, key, stream))
        .timeout(Duration::from_millis(cfg.webhook_timeout_ms))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("on_publish answered {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!(
            "on_publish did not answer within {} ms",
            cfg.webhook_timeout_ms
        )),
        Err(_) => Err("on_publish could not be reached".to_string()),
    }
}

/// Tells `rtmp.on_publish_done` (when set) that a publisher left; its answer is not awaited.
fn publish_done(ingest: &Arc<Ingest>, peer: SocketAddr, conn: u64, app: &str, stream: &str) {
    let cfg = ingest.config().rtmp.clone();
    let Some(url) = cfg.on_publish_done else {
        return;
    };
    // Also called from a guard's drop, possibly as the runtime shuts down.
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let body = form("publish_done", peer, conn, app, "", stream);
    rt.spawn(async move {
        let sent = client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .timeout(Duration::from_millis(cfg.webhook_timeout_ms))
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!("on_publish_done failed: {e}");
        }
    });
}

fn media(
    publishing: &Option<Publishing>,
    conn: u64,
    kind: TagKind,
    ms: u32,
    data: &Bytes,
) -> Result<(), End> {
    let Some(Publishing { stream: s, .. }) = publishing else {
        return Ok(());
    };
    match s.media(conn, kind, ms, data) {
        Ok(()) => Ok(()),
        // A codec the HLS output cannot carry: the publisher must change its settings.
        Err(e @ (super::flv::FlvError::VideoCodec(_) | super::flv::FlvError::AudioCodec(_))) => {
            Err(End::Refused(e.to_string()))
        }
        Err(e) => {
            tracing::debug!(stream = %s.name, "tag skipped: {e}");
            Ok(())
        }
    }
}

/// The fuzzing entry (`fuzz/`, `scripts/fuzz.sh`): what a client sends, through the same calls
/// a connection makes — the handshake, the session's chunk and AMF0 decoding, accepting its
/// requests, and the FLV tag parsers and segmenter its media goes to — without a socket or a
/// key check. When `data` starts with an odd byte the rest follows a canned valid handshake,
/// so the fuzzer spends its time on chunks and commands. Returns the panics that were
/// contained (each would have ended only its connection).
#[doc(hidden)]
pub fn fuzz_connection(data: &[u8]) -> Vec<String> {
    let mut contained_panics = Vec::new();
    let mut note = |e: End| {
        if let End::Panicked(what, msg) = e {
            contained_panics.push(format!("{what}: {msg}"));
        }
    };
    let input = match data.split_first() {
        Some((first, rest)) if first % 2 == 1 => {
            let mut v = vec![3u8];
            v.extend_from_slice(&[0u8; 1536 * 2]);
            v.extend_from_slice(rest);
            v
        }
        Some((_, rest)) => rest.to_vec(),
        None => return contained_panics,
    };
    let mut hs = Handshake::new(PeerType::Server);
    let mut chunks = None;
    // Fed in pieces as reads would deliver them.
    let mut pieces = input.chunks(1024);
    for piece in pieces.by_ref() {
        match contained("the handshake", || hs.process_bytes(piece)) {
            Ok(Ok(HandshakeProcessResult::InProgress { .. })) => {}
            Ok(Ok(HandshakeProcessResult::Completed {
                remaining_bytes, ..
            })) => {
                chunks = Some(remaining_bytes);
                break;
            }
            Ok(Err(_)) => return contained_panics,
            Err(e) => {
                note(e);
                return contained_panics;
            }
        }
    }
    let Some(first) = chunks else {
        return contained_panics;
    };
    let mut rtmp = match contained("the session", || {
        ServerSession::new(ServerSessionConfig::new())
    }) {
        Ok(Ok((s, _))) => s,
        Ok(Err(_)) => return contained_panics,
        Err(e) => {
            note(e);
            return contained_panics;
        }
    };
    let mut segmenter = super::hls::Segmenter::new(1000, 200, 4);
    let rest = pieces.flatten().copied().collect::<Vec<u8>>();
    for piece in std::iter::once(&first[..]).chain(rest.chunks(1024)) {
        let results = match input_step(&mut rtmp, piece) {
            Ok(r) => r,
            Err(e) => {
                note(e);
                return contained_panics;
            }
        };
        for r in results {
            let ServerSessionResult::RaisedEvent(event) = r else {
                continue;
            };
            let step = match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::ReleaseStreamRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    accept(&mut rtmp, request_id).map(drop)
                }
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } => {
                    let _ = segmenter.video(timestamp.value, &data);
                    Ok(())
                }
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } => {
                    let _ = segmenter.audio(timestamp.value, &data);
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = step {
                note(e);
                return contained_panics;
            }
        }
    }
    contained_panics
}

#[cfg(test)]
mod tests {
    use super::{Ingest, Live};
    use super::{Publishing, Refusal, fuzz_connection};
    use crate::config::Current;
    use crate::metrics::EdgeMetrics;
    use std::sync::Arc;

    /// A connection's task that panics or is cancelled while it holds a stream gives it back.
    #[tokio::test]
    async fn a_claimed_stream_is_released_when_its_task_panics_or_is_cancelled() {
        let config: crate::EdgeConfig =
            toml::from_str("[[live_streams]]\nname = \"show\"\nkey = \"show-key-0123456789\"\n")
                .expect("config");
        let metrics = Arc::new(EdgeMetrics::new().expect("metrics"));
        let live = Arc::new(Live::new(None));
        live.sync(&config, &metrics);
        let current = Arc::new(Current::default());
        current.set(config);
        let shared = Arc::new(Ingest::new(
            live,
            current,
            metrics,
            tokio_util::sync::CancellationToken::new(),
        ));
        let peer = "192.0.2.1:5000".parse().expect("addr");
        let stream = shared.live.get("show").expect("stream");
        let claim = |conn| {
            Publishing::claim(
                stream.clone(),
                &shared,
                peer,
                conn,
                "live",
                "show-key-0123456789",
            )
        };
        let (held, _) = claim(1).expect("claimed");
        assert!(matches!(claim(2), Err(Refusal::AlreadyLive)));
        let task = tokio::spawn(async move {
            let _held = held;
            panic!("a bug while publishing");
        });
        assert!(task.await.expect_err("it panicked").is_panic());
        let (held, _) = claim(3).expect("free again after the panic");
        let task = tokio::spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        assert!(task.await.expect_err("it was cancelled").is_cancelled());
        assert!(claim(4).is_ok(), "free again after the cancel");
    }

    /// A type 0 chunk on `csid` of an AMF0 command message declaring `declared` bytes.
    fn chunk(csid: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![csid, 0, 0, 0];
        v.extend_from_slice(&declared.to_be_bytes()[1..]);
        v.extend_from_slice(&[20, 0, 0, 0, 0]);
        v.extend_from_slice(payload);
        v
    }

    /// The two inputs known to panic rml_rtmp 0.8, after a canned handshake (odd first byte):
    /// each is contained as the end of its connection.
    #[test]
    fn rml_rtmp_panics_are_contained() {
        // A message on chunk stream 10 left partial (128 of 228 bytes), then one on chunk
        // stream 11 shorter than that: `length - current_payload_length` underflows.
        let mut interleaved = vec![1u8];
        interleaved.extend(chunk(10, 228, &[0u8; 128]));
        interleaved.extend(chunk(11, 10, &[0u8; 10]));
        // An AMF0 command of one value: `arguments.drain(..3)` is out of range.
        let mut short = vec![1u8];
        short.extend(chunk(3, 10, b"\x02\x00\x07connect"));
        for input in [interleaved, short] {
            let panics = fuzz_connection(&input);
            assert_eq!(panics.len(), 1, "{panics:?}");
            assert!(
                panics[0].starts_with("the chunk or AMF0 decoder"),
                "{panics:?}"
            );
        }
        // A well-formed connect goes through without one.
        assert!(fuzz_connection(&[1u8]).is_empty());
    }

    /// Found by `fuzz/` (target rtmp): a type 1 header whose timestamp delta is the extended
    /// marker (0xFFFFFF) with an extended timestamp below it makes rml_rtmp compute
    /// `timestamp - MAX_INITIAL_TIMESTAMP` on u32 (deserializer.rs:358): a panic where overflow
    /// is checked (debug builds), a wrapped timestamp elsewhere. Either way the edge goes on.
    #[test]
    fn an_extended_timestamp_below_the_marker_is_harmless() {
        let mut input = vec![1u8];
        // Window Acknowledgement Size (type 5) on chunk stream 3: a previous header there.
        input.extend_from_slice(&[0x03, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0, 0, 0, 0x10, 0]);
        // Type 1 on chunk stream 3: delta 0xFFFFFF, 4 bytes, type 5; extended timestamp 1.
        input.extend_from_slice(&[
            0x43, 0xff, 0xff, 0xff, 0, 0, 4, 5, 0, 0, 0, 1, 0, 0, 0x10, 0,
        ]);
        let panics = fuzz_connection(&input);
        assert!(panics.len() <= 1, "{panics:?}");
        if cfg!(debug_assertions) {
            assert_eq!(panics.len(), 1, "overflow is checked in this build");
        }
    }
}

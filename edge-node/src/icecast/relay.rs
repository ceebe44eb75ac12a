//! Relays: pull a stream from any Icecast-compatible server (another edge, Icecast, SHOUTcast)
//! onto a local mount, carrying its ICY titles over, and reconnect with backoff and jitter when
//! it ends. Each relay is a task owned by the server and cancelled when its configuration goes.

use super::Icecast;
use crate::config::RelayConfig;
use crate::icy::{Deinterleaver, stream_title};
use crate::mount::{Coalescer, Session, SourceInfo};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A parsed `http://host[:port]/path[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

/// Parses a URL from upstream (a redirect's `Location`) into a [`Target`].
pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
    let u = url::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    target(&u)
}

/// Where an http:// URL points.
pub(crate) fn target(u: &url::Url) -> Result<Target, String> {
    let url = u.as_str();
    if u.scheme() != "http" {
        return Err(format!("{url:?}: only http:// is supported"));
    }
    let host = u.host_str().ok_or_else(|| format!("{url:?} has no host"))?;
    let mut path_and_query = u.path().to_string();
    if let Some(q) = u.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Ok(Target {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: u.port_or_known_default().unwrap_or(80),
        path_and_query,
    })
}

/// The reply head of an upstream server: status and headers (`ICY 200 OK` accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl UpstreamHead {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a response head; `Ok(None)` while incomplete.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<(UpstreamHead, usize)>, String> {
    // SHOUTcast answers `ICY 200 OK`; httparse wants an HTTP version.
    let rewritten;
    let (buf, shift) = if buf.starts_with(b"ICY ") {
        let mut v = b"HTTP/1.0 ".to_vec();
        v.extend_from_slice(&buf[4..]);
        rewritten = v;
        // "HTTP/1.0 " is 5 bytes longer than "ICY ".
        (&rewritten[..], 5)
    } else {
        (buf, 0)
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((
            UpstreamHead {
                status: resp.code.unwrap_or(0),
                headers: resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect(),
            },
            n - shift,
        ))),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            Err("response head too large".into())
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("invalid response: {e}")),
    }
}

/// The relays running on the node, by mount path.
#[derive(Default)]
pub(crate) struct Relays {
    running: std::sync::Mutex<std::collections::HashMap<String, (RelayConfig, CancellationToken)>>,
}

impl Relays {
    /// Starts relay tasks for new relays, stops those of removed ones and restarts those whose
    /// URL changed. Other changes (`max_listeners`) reach the mount without a reconnect.
    pub(crate) fn sync(&self, ice: &Arc<Icecast>) {
        let wanted = ice.config().relays.clone();
        let mut running = crate::sync::lock(&self.running);
        running.retain(|path, (cfg, token)| {
            match wanted.iter().find(|w| &w.path == path && w.url == cfg.url) {
                Some(w) => {
                    *cfg = w.clone();
                    true
                }
                None => {
                    token.cancel();
                    false
                }
            }
        });
        for r in wanted {
            if running.contains_key(&r.path) {
                continue;
            }
            let token = ice.shutdown.child_token();
            running.insert(r.path.clone(), (r.clone(), token.clone()));
            tokio::spawn(run(ice.clone(), r, token));
        }
    }
}

/// Runs one relay until `stop` is cancelled.
pub(crate) async fn run(ice: Arc<Icecast>, relay: RelayConfig, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            r = pull(&ice, &relay, &stop) => r,
        };
        match outcome {
            Ok(why) => tracing::info!(mount = %relay.path, url = %relay.url, "relay ended: {why}"),
            Err(e) => tracing::warn!(mount = %relay.path, url = %relay.url, "relay failed: {e}"),
        }
        // A connection that lived a while starts the backoff over.
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        // Up to half the backoff again, so relays of a restarted upstream do not return in step.
        let half = u64::try_from(backoff.as_millis() / 2).unwrap_or(0);
        let jitter = Duration::from_millis(rand::random_range(0..=half));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection to the upstream: returns why it ended normally.
async fn pull(
    ice: &Arc<Icecast>,
    relay: &RelayConfig,
    stop: &CancellationToken,
) -> Result<&'static str, String> {
    let limits = ice.config().limits.clone();
    let timeout = limits.source_timeout();
    let (stream, head, leftover, target) = connect(relay, timeout).await?;
    let Some(mount) = ice.mount(&relay.path) else {
        return Ok("mount removed");
    };
    let session = Session::start(source_info(&head, &target), &limits);
    if !mount.attach(session.clone()) {
        return Err("the mount already has a source".into());
    }
    tracing::info!(mount = %relay.path, url = %relay.url, "relay connected");
    let metaint = head
        .header("icy-metaint")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&m| m > 0);
    // Detaches even when this future is dropped mid-stream (relay removed or changed).
    let _attached = Attached {
        mount: mount.clone(),
        session: session.clone(),
    };
    carry(stream, leftover, &session, metaint, timeout, stop).await
}

/// Asks the upstream for the stream, following up to three redirects: the connection, the
/// 200 reply's head, what was read past it, and where it ended up.
async fn connect(
    relay: &RelayConfig,
    timeout: Duration,
) -> Result<(TcpStream, UpstreamHead, BytesMut, Target), String> {
    let mut target = target(&relay.url)?;
    let mut redirects = 0;
    loop {
        // IPv6 literals need brackets both to connect and in the Host header.
        let host = if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        let addr = format!("{host}:{}", target.port);
        let mut stream = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let host_header = if target.port == 80 {
            host.clone()
        } else {
            addr.clone()
        };
        // An Onda origin does not count a pull with its relay key as a listener.
        let relay_key = relay
            .relay_key
            .as_deref()
            .filter(|k| !k.is_empty() && !k.contains(['\r', '\n']))
            .map(|k| format!("X-Onda-Relay: {k}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: {}\r\nIcy-MetaData: 1\r\n{relay_key}Accept: */*\r\n\r\n",
            target.path_and_query,
            crate::http::SERVER
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(4096);
        let (head, used) = loop {
            let n = tokio::time::timeout(timeout, stream.read_buf(&mut buf))
                .await
                .map_err(|_| "upstream sent no reply in time".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("upstream closed before replying".into());
            }
            if let Some(done) = parse_response(&buf)? {
                break done;
            }
        };
        let _ = buf.split_to(used);
        if matches!(head.status, 301 | 302 | 303 | 307 | 308) && redirects < 3 {
            let location = head.header("location").unwrap_or_default().to_string();
            target = parse_url(&location)?;
            redirects += 1;
            continue;
        }
        if head.status != 200 {
            return Err(format!("upstream answered {}", head.status));
        }
        return Ok((stream, head, buf, target));
    }
}

/// The session's description, from the upstream's `icy-*`/`ice-*` headers.
fn source_info(head: &UpstreamHead, target: &Target) -> SourceInfo {
    let pick = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| head.header(n))
            .unwrap_or_default()
            .to_string()
    };
    SourceInfo {
        content_type: head
            .header("content-type")
            .unwrap_or("audio/mpeg")
            .to_string(),
        name: pick(&["icy-name", "ice-name"]),
        description: pick(&["icy-description", "ice-description"]),
        genre: pick(&["icy-genre", "ice-genre"]),
        url: pick(&["icy-url", "ice-url"]),
        public: pick(&["icy-pub", "ice-public"]) == "1",
        bitrate: pick(&["icy-br"])
            .split(',')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        audio_info: pick(&["ice-audio-info"]),
        user_agent: String::new(),
        ip: format!("{}:{}", target.host, target.port),
        relay: true,
        ..SourceInfo::default()
    }
}

/// Carries the upstream's audio (and its ICY titles) into `session` until the upstream ends or
/// goes silent, the relay is stopped, or an admin kills the source.
async fn carry(
    mut stream: TcpStream,
    leftover: BytesMut,
    session: &Session,
    metaint: Option<usize>,
    timeout: Duration,
    stop: &CancellationToken,
) -> Result<&'static str, String> {
    let mut de = metaint.map(Deinterleaver::new);
    let mut co = Coalescer::default();
    let (mut audio, mut titles) = (Vec::new(), Vec::new());
    let mut data = leftover.freeze();
    let mut heard = Instant::now();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let result = loop {
        match &mut de {
            Some(de) => de.feed(&data, &mut audio, &mut titles),
            None => audio.push(data.clone()),
        }
        for a in audio.drain(..) {
            co.add(&a);
        }
        if let Some(t) = titles
            .drain(..)
            .filter_map(|t| stream_title(&t))
            .next_back()
        {
            // Audio before the title change goes out first, so the title lands where it did
            // upstream (within the coalescing delay).
            co.flush(session);
            session.set_title(&t, "");
        }
        if co.due() {
            co.flush(session);
        }
        let silence_deadline = heard + timeout;
        let wake = co
            .deadline()
            .map_or(silence_deadline, |d| d.min(silence_deadline));
        if buf.capacity() < 4096 {
            buf.reserve(16 * 1024);
        }
        let read = tokio::select! {
            () = stop.cancelled() => break Ok("relay removed"),
            () = session.kill.notified() => break Ok("killed by admin"),
            r = tokio::time::timeout_at(wake.into(), stream.read_buf(&mut buf)) => r,
        };
        data = bytes::Bytes::new();
        match read {
            Err(_) if Instant::now() >= silence_deadline => {
                break Ok("upstream silent for longer than the source timeout");
            }
            Err(_) => co.flush(session),
            Ok(Err(e)) => break Err(e.to_string()),
            Ok(Ok(0)) => break Ok("upstream closed the stream"),
            Ok(Ok(_)) => {
                heard = Instant::now();
                data = buf.split().freeze();
            }
        }
    };
    co.flush(session);
    result
}

/// Ends a relay's session when dropped, however the relay's future ends.
struct Attached {
    mount: Arc<crate::mount::Mount>,
    session: Arc<crate::mount::Session>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.mount.detach(&self.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8000/live?x=1").expect("ok"),
            Target {
                host: "127.0.0.1".into(),
                port: 8000,
                path_and_query: "/live?x=1".into()
            }
        );
        assert_eq!(parse_url("http://example.org/a").expect("ok").port, 80);
        assert_eq!(parse_url("http://[::1]:9/a").expect("ok").host, "::1");
        assert!(parse_url("https://x/a").is_err());
        assert!(parse_url("nonsense").is_err());
    }

    #[test]
    fn response_heads() {
        let raw = b"HTTP/1.0 200 OK\r\nicy-metaint:16000\r\nContent-Type: audio/mpeg\r\n\r\nAUDIO";
        let (h, n) = parse_response(raw).expect("ok").expect("complete");
        assert_eq!(h.status, 200);
        assert_eq!(h.header("ICY-METAINT"), Some("16000"));
        assert_eq!(&raw[n..], b"AUDIO");
        let raw = b"ICY 200 OK\r\nicy-name:x\r\n\r\nAUDIO";
        let (h, n) = parse_response(raw).expect("ok").expect("complete");
        assert_eq!(h.status, 200);
        assert_eq!(&raw[n..], b"AUDIO");
        assert_eq!(parse_response(b"HTTP/1.0 200 OK\r\nX: y\r\n"), Ok(None));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}

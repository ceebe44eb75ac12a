//! The edge's HTTP front: accepts connections, enforces the connection limits and the header
//! timeout, parses the request head and hands the connection to the source, listener or admin
//! code.
//!
//! Hand-written on tokio and httparse rather than on hyper because Icecast clients need what a
//! general HTTP server does not give: the `SOURCE` method and `ICE/1.0` version, request bodies
//! that run until the connection closes with neither Content-Length nor chunking, a `100
//! Continue` sent only after authentication, and per-listener control of queues and writes.

use crate::config::{EdgeConfig, MountConfig};
use crate::head::{self, HeadError, RequestHead};
use crate::metrics::EdgeMetrics;
use crate::mount::{Mount, lock};
use crate::{admin, cors, listener, source};
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// State shared by every connection of one edge node.
pub struct Shared {
    config: RwLock<Arc<EdgeConfig>>,
    mounts: RwLock<HashMap<String, Arc<Mount>>>,
    per_ip: Mutex<HashMap<IpAddr, PerIp>>,
    relays: Mutex<HashMap<String, (crate::config::RelayConfig, CancellationToken)>>,
    autodjs: Mutex<HashMap<String, crate::autodj::Handle>>,
    renditions: Mutex<Option<Arc<crate::autodj::render::Renditions>>>,
    open: AtomicU64,
    next_id: AtomicU64,
    pub started: SystemTime,
    pub metrics: EdgeMetrics,
    pub shutdown: CancellationToken,
    pub usage: crate::usage::Usage,
    groups: Mutex<HashMap<String, Arc<crate::usage::Group>>>,
    /// Live video streams (RTMP in, HLS out).
    pub live: crate::live::Live,
    /// Source logins: bounded password checks, lockouts, remembered successes.
    pub logins: crate::auth::Logins,
}

impl Shared {
    pub fn new(config: EdgeConfig) -> anyhow::Result<Shared> {
        let metrics = EdgeMetrics::new()?;
        let logins = crate::auth::Logins::new(
            config.limits.password_checks,
            metrics.password_verifications.clone(),
        );
        let shared = Shared {
            config: RwLock::new(Arc::new(EdgeConfig::default())),
            mounts: RwLock::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
            autodjs: Mutex::new(HashMap::new()),
            renditions: Mutex::new(None),
            open: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            started: SystemTime::now(),
            metrics,
            shutdown: CancellationToken::new(),
            usage: crate::usage::Usage::default(),
            groups: Mutex::new(HashMap::new()),
            live: crate::live::Live::default(),
            logins,
        };
        shared.set_config(config);
        Ok(shared)
    }

    pub fn config(&self) -> Arc<EdgeConfig> {
        self.config
            .read()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
    }

    /// Makes `config` current: new mounts appear, removed ones end (their source and listeners
    /// are disconnected), changed ones take the new settings without touching their listeners.
    pub fn set_config(&self, config: EdgeConfig) {
        let wanted: Vec<MountConfig> = config
            .mounts
            .iter()
            .cloned()
            // A relay's mount takes no source clients (no password).
            .chain(config.relays.iter().map(|r| MountConfig {
                max_listeners: r.max_listeners,
                listener_group: r.listener_group.clone(),
                relay_key: r.relay_key.clone(),
                ..MountConfig::new(&r.path, "")
            }))
            .collect();
        // Groups keep their counts across configurations; only their limits change.
        let groups: HashMap<String, Arc<crate::usage::Group>> = {
            let mut all = lock(&self.groups);
            all.retain(|name, _| config.listener_groups.contains_key(name));
            for (name, max) in &config.listener_groups {
                all.entry(name.clone())
                    .or_insert_with(|| Arc::new(crate::usage::Group::new(*max)))
                    .set_max(*max);
            }
            all.clone()
        };
        let group_of = |mc: &MountConfig| {
            mc.listener_group
                .as_ref()
                .and_then(|g| groups.get(g).cloned())
        };
        let mut mounts = match self.mounts.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let keep: std::collections::HashSet<&str> =
            wanted.iter().map(|m| m.path.as_str()).collect();
        let gone: Vec<String> = mounts
            .keys()
            .filter(|p| !keep.contains(p.as_str()))
            .cloned()
            .collect();
        for path in gone {
            if let Some(m) = mounts.remove(&path) {
                m.removed.store(true, Ordering::Release);
                self.metrics.forget_mount(&path);
                if let Some(s) = m.session() {
                    s.kill();
                    m.detach(&s);
                }
                for l in lock(&m.listeners).values() {
                    let _ = l.control.send(crate::mount::Control::Kill);
                }
            }
        }
        for mc in wanted {
            match mounts.get(&mc.path) {
                Some(m) => {
                    m.set_group(group_of(&mc));
                    if m.config() != mc {
                        m.set_config(mc);
                    }
                }
                None => {
                    let counters = self.metrics.mount_counters(&mc.path);
                    let cell = self.usage.cell(&mc.path);
                    let group = group_of(&mc);
                    mounts.insert(
                        mc.path.clone(),
                        Arc::new(Mount::new(mc, counters, cell, group)),
                    );
                }
            }
        }
        drop(mounts);
        self.live.sync(&config, &self.metrics);
        let new = Arc::new(config);
        match self.config.write() {
            Ok(mut c) => *c = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    /// Starts relay tasks for new relays, stops those of removed ones and restarts those whose
    /// URL changed. Other changes (`max_listeners`) reach the mount without a reconnect.
    pub fn sync_relays(self: &Arc<Self>) {
        let wanted = self.config().relays.clone();
        let mut running = lock(&self.relays);
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
            let token = self.shutdown.child_token();
            running.insert(r.path.clone(), (r.clone(), token.clone()));
            tokio::spawn(crate::relay::run(self.clone(), r, token));
        }
    }

    /// Starts AutoDJs that are new, stops removed ones and hands changed configurations to the
    /// running ones (they apply them at the next track, so listeners stay connected).
    pub fn sync_autodj(self: &Arc<Self>) {
        let config = self.config();
        let renditions = {
            let mut slot = lock(&self.renditions);
            let dir = std::path::Path::new(&config.media.cache_dir);
            match slot.as_ref() {
                Some(r) if r.dir() == dir => r.clone(),
                _ => {
                    let r = Arc::new(crate::autodj::render::Renditions::new(dir));
                    *slot = Some(r.clone());
                    r
                }
            }
        };
        let mut running = lock(&self.autodjs);
        running.retain(
            |name, h| match config.autodj.iter().find(|a| &a.name == name) {
                Some(a) => {
                    h.config.send_if_modified(|c| {
                        let changed = c != a;
                        if changed {
                            *c = a.clone();
                        }
                        changed
                    });
                    true
                }
                None => {
                    h.stop.cancel();
                    false
                }
            },
        );
        for a in &config.autodj {
            if running.contains_key(&a.name) {
                continue;
            }
            let (tx, rx) = tokio::sync::watch::channel(a.clone());
            let stop = self.shutdown.child_token();
            let now = Arc::new(Mutex::new(None));
            tokio::spawn(crate::autodj::run(
                self.clone(),
                renditions.clone(),
                rx,
                stop.clone(),
                now.clone(),
            ));
            running.insert(
                a.name.clone(),
                crate::autodj::Handle {
                    config: tx,
                    stop,
                    now,
                },
            );
        }
    }

    /// What each AutoDJ plays now, by AutoDJ name.
    pub fn now_playing(&self) -> Vec<(String, crate::autodj::NowPlaying)> {
        let running = lock(&self.autodjs);
        let mut v: Vec<_> = running
            .iter()
            .filter_map(|(name, h)| Some((name.clone(), lock(&h.now).clone()?)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Usage of every mount and live stream since the previous call (those with nothing to
    /// report left out).
    pub fn take_usage(&self) -> Vec<crate::usage::MountUsage> {
        let mut out = self.live.take_usage();
        for (path, cell) in self.usage.cells() {
            let now = std::time::Instant::now();
            let usage = match self.mount(&path).filter(|m| Arc::ptr_eq(&m.usage, &cell)) {
                Some(m) => {
                    // The table's lock is held across the take so a listener leaving meanwhile
                    // is counted either here or at its leave, never both.
                    let mut table = lock(&m.listeners);
                    let open = table
                        .values_mut()
                        .filter(|e| !e.relay)
                        .map(|e| crate::usage::restart_clock(&mut e.since, now))
                        .sum();
                    let u = cell.take(&path, open);
                    drop(table);
                    u
                }
                None => cell.take(&path, std::time::Duration::ZERO),
            };
            if !usage.is_empty() {
                out.push(usage);
            }
        }
        self.usage.prune();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    pub fn mount(&self, path: &str) -> Option<Arc<Mount>> {
        let mounts = self
            .mounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        mounts.get(path).cloned()
    }

    /// Every mount, sorted by path.
    pub fn mounts(&self) -> Vec<Arc<Mount>> {
        let mounts = self
            .mounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = mounts.values().cloned().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The mount whose live source a listener of `home` hears: `home` itself, else the first
    /// live mount along its fallback chain.
    pub fn resolve(&self, home: &str) -> Option<(Arc<Mount>, Arc<crate::mount::Session>)> {
        let mut path = home.to_string();
        for _ in 0..8 {
            let m = self.mount(&path)?;
            if let Some(s) = m.session() {
                return Some((m, s));
            }
            path = m.config().fallback?;
        }
        None
    }

    /// A new connection from `ip`, counted against the total and, while its head is read,
    /// against `ip`'s heads in flight; None when a limit is reached. Whether it counts as one of
    /// `ip`'s open connections is decided once its head is known ([`ConnGuard::settle`]).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let cfg = self.config();
        if self.open.load(Ordering::Relaxed) >= cfg.limits.max_connections {
            return None;
        }
        let max = cfg.limits.max_connections_per_ip;
        let mut per_ip = lock(&self.per_ip);
        let n = per_ip.entry(ip).or_default();
        if max > 0 && n.heads >= max {
            return None;
        }
        n.heads += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnGuard {
            shared: self.clone(),
            ip,
            counted: Counted::Head,
        })
    }

    /// Whether a request presents the relay key of what it asks for (`X-Onda-Relay`): a pull
    /// by another node of the cluster, not a listener.
    pub fn is_relay_request(&self, head: &RequestHead) -> bool {
        let Some(key) = head.header(crate::live::pull::RELAY_HEADER) else {
            return false;
        };
        match head.path.strip_prefix("/hls/") {
            Some(rest) => {
                let name = rest.split('/').next().unwrap_or_default();
                self.live
                    .get(name)
                    .filter(|s| s.parent.is_none())
                    .is_some_and(|s| s.is_relay(Some(key)))
            }
            None => self.mount(&head.path).is_some_and(|m| m.is_relay_key(key)),
        }
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
struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
    counted: Counted,
}

impl ConnGuard {
    /// The head is read: a relay pull (the relay key of what it asks for) is exempt from the
    /// per-address limit, since every pull of a peer node comes from one address; any other
    /// request counts as one of its address's open connections, or is refused (false) when the
    /// address has `max_connections_per_ip` open.
    fn settle(&mut self, relay: bool) -> bool {
        let max = self.shared.config().limits.max_connections_per_ip;
        let mut per_ip = lock(&self.shared.per_ip);
        let n = per_ip.entry(self.ip).or_default();
        if self.counted == Counted::Head {
            n.heads = n.heads.saturating_sub(1);
        }
        let admitted = relay || max == 0 || n.open < max;
        self.counted = if admitted && !relay {
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
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = lock(&self.shared.per_ip);
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

/// A parsed request with its connection and the body bytes read along with the head.
pub struct Request {
    pub head: RequestHead,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub leftover: BytesMut,
}

/// The next connection on `listener` (with TCP_NODELAY), or None at shutdown. A failed
/// accept (out of file descriptors and the like) waits a moment instead of spinning.
pub async fn next_connection(
    listener: &TcpListener,
    shared: &Shared,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    while let Some((stream, peer)) = next_connection(&listener, &shared, "HTTP").await {
        let shared = shared.clone();
        tokio::spawn(handle(stream, peer, shared));
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let Some(mut guard) = shared.admit(peer.ip()) else {
        refuse_connection(&shared, &mut stream).await;
        return;
    };
    let cfg = shared.config();
    let max = usize::try_from(cfg.limits.max_header_bytes).unwrap_or(8192);
    let max_headers = usize::try_from(cfg.limits.max_headers).unwrap_or(64);
    let read = tokio::time::timeout(
        cfg.limits.header_timeout(),
        read_head(&mut stream, max, max_headers),
    )
    .await;
    let (head, leftover) = match read {
        Err(_) => {
            let _ = respond(
                &mut stream,
                408,
                "text/plain",
                &[],
                b"Request head timeout\n",
            )
            .await;
            return;
        }
        Ok(Err(None)) => return, // closed before sending anything
        Ok(Err(Some(e))) => {
            let status = match e {
                HeadError::TooLarge => 431,
                HeadError::TooManyHeaders => 431,
                HeadError::Malformed(_) => 400,
            };
            let _ = respond(
                &mut stream,
                status,
                "text/plain",
                &[],
                format!("{e}\n").as_bytes(),
            )
            .await;
            return;
        }
        Ok(Ok(v)) => v,
    };
    if !guard.settle(shared.is_relay_request(&head)) {
        refuse_connection(&shared, &mut stream).await;
        return;
    }
    let req = Request {
        head,
        stream,
        peer,
        leftover,
    };
    dispatch(req, shared).await;
}

/// The answer to a connection beyond the limits.
async fn refuse_connection(shared: &Shared, stream: &mut TcpStream) {
    shared.metrics.refused_connections.inc();
    let _ = respond(stream, 503, "text/plain", &[], b"Too many connections\n").await;
}

/// Reads until a complete head; `Err(None)` when the peer closed first.
async fn read_head(
    stream: &mut TcpStream,
    max: usize,
    max_headers: usize,
) -> Result<(RequestHead, BytesMut), Option<HeadError>> {
    let mut buf = BytesMut::with_capacity(1024);
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

/// Who answers a GET or HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Admin,
    Hls,
    Mount,
}

/// The edge's own paths are those of `onda_shared::paths` (the rule the API and the edge's
/// configuration check refuse mounts by): its reserved whole paths and everything under the
/// `admin` segment are the admin routes, everything under `hls` the live streams.
fn route(path: &str) -> Route {
    use onda_shared::paths::{RESERVED_PATHS, reserved};
    let first = path
        .strip_prefix('/')
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if reserved(path).is_none() {
        Route::Mount
    } else if first == "hls" {
        Route::Hls
    } else {
        debug_assert!(first == "admin" || RESERVED_PATHS.contains(&path), "{path}");
        Route::Admin
    }
}

async fn dispatch(mut req: Request, shared: Arc<Shared>) {
    let method = req.head.method.clone();
    let path = req.head.path.clone();
    match (method.as_str(), path.as_str()) {
        ("SOURCE" | "PUT", _) => source::serve(req, shared).await,
        ("OPTIONS", _) => {
            let _ = respond(&mut req.stream, 204, "text/plain", cors::PREFLIGHT, b"").await;
        }
        ("GET" | "HEAD", p) => match route(p) {
            Route::Admin => admin::serve(req, shared).await,
            Route::Hls => crate::live::serve_hls(req, shared).await,
            // A mount or nothing; the listener code answers 404 for nothing.
            Route::Mount => listener::serve(req, shared).await,
        },
        _ => {
            let _ = respond(
                &mut req.stream,
                405,
                "text/plain",
                &[("Allow", "GET, HEAD, OPTIONS, PUT, SOURCE")],
                b"Method not allowed\n",
            )
            .await;
        }
    }
}

pub const SERVER: &str = concat!(
    "Onda/",
    env!("CARGO_PKG_VERSION"),
    " (Icecast 2.4 compatible)"
);

pub fn reason(status: u16) -> &'static str {
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
pub async fn respond(
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
pub async fn respond_cached(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    cache_control: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.0 {status} {}\r\nServer: {SERVER}\r\nConnection: Close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: {cache_control}\r\n",
        reason(status),
        body.len()
    );
    cors::push_lines(&mut out, cors::RESPONSE);
    cors::push_lines(&mut out, headers);
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    // A client that stops reading must not hold its connection slot forever.
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.write_all(&bytes))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "response write stalled")
        })??;
    stream.flush().await?;
    close_gracefully(stream).await;
    Ok(())
}

/// Sends FIN and discards what the client still sends (a refused source's audio, the rest of
/// an oversized head) for a moment, so closing does not turn into a reset that destroys the
/// response before the client has read it.
pub async fn close_gracefully(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
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
    use super::{Route, route};
    use onda_shared::paths::{RESERVED_PATHS, RESERVED_SEGMENTS};

    #[test]
    fn the_edge_routes_exactly_the_shared_reserved_paths_itself() {
        for p in RESERVED_PATHS {
            assert_eq!(route(p), Route::Admin, "{p}");
        }
        for seg in RESERVED_SEGMENTS {
            for p in [
                format!("/{seg}"),
                format!("/{seg}/x"),
                format!("/{seg}/x/y.m3u8"),
            ] {
                assert_ne!(route(&p), Route::Mount, "{p}");
            }
        }
        assert_eq!(route("/admin/metadata"), Route::Admin);
        assert_eq!(route("/hls/show/index.m3u8"), Route::Hls);
        for p in [
            "/administration-radio/x.mp3",
            "/hlsx",
            "/live",
            "/metrics/x",
            "/",
        ] {
            assert_eq!(route(p), Route::Mount, "{p}");
        }
    }
}

//! Listeners: the Icecast reply head, the burst, then the mount's audio (with ICY metadata when
//! asked) until the listener leaves, is dropped for falling behind, or its source and every
//! fallback are gone. A listener whose mount lost its source keeps its connection and hears the
//! fallback, and goes back when the source returns.

use super::Icecast;
use crate::http::{Request, SERVER, respond};
use crate::icy::Interleaver;
use crate::mount::{Control, ListenerEntry, Mount, Read, Refused, Session};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// A write that makes no progress for this long means the listener is gone or stalled.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a blocked write looks at how far the source has moved on.
const STALL_CHECK: Duration = Duration::from_millis(250);

fn wants_icy(req: &Request) -> bool {
    req.head
        .header("icy-metadata")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|v| v > 0)
}

/// Formats whose container carries its own metadata get no ICY blocks (as in Icecast).
fn icy_capable(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    !(ct.contains("ogg") || ct.contains("webm") || ct.contains("opus"))
}

fn reply_head(mount: &Mount, session: &Session, metaint: Option<u64>) -> String {
    let cfg = mount.config();
    let info = &session.info;
    let pick = |src: &str, dflt: &Option<String>| {
        if src.is_empty() {
            dflt.clone().unwrap_or_default()
        } else {
            src.to_string()
        }
    };
    let mut h = format!(
        "HTTP/1.0 200 OK\r\nServer: {SERVER}\r\nConnection: Close\r\nContent-Type: {}\r\n\
         Cache-Control: no-cache, no-store\r\nExpires: Mon, 26 Jul 1997 05:00:00 GMT\r\nPragma: no-cache\r\n",
        clean(&info.content_type)
    );
    crate::http::cors::push_lines(&mut h, crate::http::cors::RESPONSE);
    if info.bitrate > 0 {
        h.push_str(&format!("icy-br:{}\r\n", info.bitrate));
    }
    if !info.audio_info.is_empty() {
        h.push_str(&format!("ice-audio-info: {}\r\n", clean(&info.audio_info)));
    }
    for (key, value) in [
        ("icy-description", pick(&info.description, &cfg.description)),
        ("icy-genre", pick(&info.genre, &cfg.genre)),
        ("icy-name", pick(&info.name, &cfg.name)),
        ("icy-url", pick(&info.url, &cfg.url)),
    ] {
        if !value.is_empty() {
            h.push_str(&format!("{key}:{}\r\n", clean(&value)));
        }
    }
    let public = cfg.public.unwrap_or(info.public);
    h.push_str(&format!("icy-pub:{}\r\n", u8::from(public)));
    if let Some(m) = metaint {
        h.push_str(&format!("icy-metaint:{m}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// Header values come from source clients: no line breaks may pass into a reply.
fn clean(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

pub(crate) async fn serve(req: Request, ice: Arc<Icecast>) {
    // Boxed: what answering takes (the reply's writes) is not kept in the task for as long
    // as the listener stays.
    let Some(mut l) = Box::pin(Listening::start(req, &ice)).await else {
        return;
    };
    let end = l.run(&ice).await;
    l.registered.remove_listener(l.entry.id);
    tracing::debug!(listener = l.entry.id, home = %l.home, pos = l.pos, "listener left: {end}");
}

/// A listener past its reply head: the mount it counts on, what it hears and how far it is.
struct Listening {
    stream: TcpStream,
    /// Counts the connection under the limits while the listener stays.
    _conn: Option<crate::http::ConnGuard>,
    entry: ListenerEntry,
    control: crate::mount::ControlRx,
    /// The mount asked for (or moved to), and its source's comings and goings.
    home: String,
    home_gen: Option<tokio::sync::watch::Receiver<u64>>,
    /// Where the listener counts: its home, even while it hears a fallback.
    registered: Arc<Mount>,
    /// What it hears: the home mount or a fallback.
    current: Arc<Mount>,
    session: Arc<Session>,
    pos: u64,
    /// Codec headers the decoder needs first (Ogg), once per session joined.
    prefix: Option<Bytes>,
    icy: Option<Interleaver>,
    queue_bytes: u64,
}

impl Listening {
    /// Answers the request: 404 without a mount or anything playing, 403 when full, the reply
    /// head (and no more for HEAD); then the listener is registered and ready to hear the burst.
    async fn start(mut req: Request, ice: &Icecast) -> Option<Listening> {
        let home = req.head.path.clone();
        let not_found: &[u8] = b"The file you requested could not be found\n";
        let Some(home_mount) = ice.mount(&home) else {
            let _ = respond(&mut req.stream, 404, "text/plain", &[], not_found).await;
            return None;
        };
        // Subscribe before resolving, so a source returning meanwhile is not missed.
        let home_gen = Some(home_mount.generation.subscribe());
        let Some((current, session)) = ice.resolve(&home) else {
            let body: &[u8] = b"Source not found: nothing is playing on this mount\n";
            let _ = respond(&mut req.stream, 404, "text/plain", &[], body).await;
            return None;
        };
        let limits = ice.config().limits.clone();
        if limits.listener_send_buffer_bytes > 0 {
            let size = usize::try_from(limits.listener_send_buffer_bytes).unwrap_or(usize::MAX);
            let _ = socket2::SockRef::from(&req.stream).set_send_buffer_size(size);
        }
        let metaint = (wants_icy(&req) && icy_capable(&session.info.content_type))
            .then_some(limits.icy_metaint);
        let head = reply_head(&current, &session, metaint);
        if req.head.method == "HEAD" {
            let _ = req.stream.write_all(head.as_bytes()).await;
            return None;
        }
        let (control_tx, control) = crate::mount::control_line();
        let entry = ListenerEntry {
            id: ice.next_id(),
            ip: req.peer.ip(),
            user_agent: req
                .head
                .header("user-agent")
                .unwrap_or_default()
                .to_string(),
            connected_at: Instant::now(),
            control: control_tx,
            relay: req
                .head
                .header("x-onda-relay")
                .is_some_and(|k| home_mount.is_relay_key(k)),
            since: Instant::now(),
            group: None,
        };
        // From here on only the socket is needed: the request head and the read buffer go,
        // which matters at ten thousand listeners.
        let Request {
            mut stream, conn, ..
        } = req;
        if let Err(why) = home_mount.add_listener(entry.clone()) {
            // Icecast answers a full mount with 403; players know it as "server full".
            let body: &[u8] = match why {
                Refused::GroupFull => {
                    b"Forbidden: this station's listener limit is reached on this server\n"
                }
                Refused::MountFull | Refused::Removed => b"Forbidden: max listeners reached\n",
            };
            let _ = respond(&mut stream, 403, "text/plain", &[], body).await;
            return None;
        }
        ice.metrics.listener_connects.inc();
        // The burst is measured from the moment of connection, before the reply head is written.
        let (pos, prefix) = session.listener_start(limits.burst_bytes);
        if tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(head.as_bytes()))
            .await
            .is_err()
        {
            home_mount.remove_listener(entry.id);
            return None;
        }
        Some(Listening {
            stream,
            _conn: conn,
            entry,
            control,
            home,
            home_gen,
            registered: home_mount,
            current,
            session,
            pos,
            prefix,
            icy: metaint.map(|m| Interleaver::new(usize::try_from(m).unwrap_or(16_000))),
            queue_bytes: limits.queue_bytes,
        })
    }

    /// Streams until the listener leaves, is dropped or has nothing left to hear; says why.
    async fn run(&mut self, ice: &Icecast) -> &'static str {
        // A player sends nothing after its request; watching the socket notices a reset at
        // once instead of at the next failed write, which keeps listener time (billed usage)
        // exact. A player that closes with unread audio resets; an end of its sending side only
        // (a client that half-closes after its request) keeps it listening, so that ends the
        // watch, not the stream.
        let mut hangup = [0u8; 64];
        let mut watch_peer = true;
        loop {
            let on_fallback = self.current.path != self.home;
            let end = tokio::select! {
                biased;
                ctl = self.control.recv() => match ctl {
                    None | Some(Control::Kill) => Some("killed"),
                    Some(Control::Move(dest)) => self.move_to(dest, ice),
                },
                () = self.session.wait(self.pos) => self.hear(ice).await,
                changed = wait_generation(&mut self.home_gen), if on_fallback => {
                    // The home mount's source returned: go back to it.
                    if changed
                        && let Some(m) = ice.mount(&self.home)
                        && let Some(s) = m.session()
                    {
                        self.tune(m, s);
                    }
                    None
                },
                r = self.stream.read(&mut hangup), if watch_peer => match r {
                    Err(_) => Some("gone"),
                    Ok(0) => {
                        watch_peer = false;
                        None
                    }
                    // Bytes after the request (a pipelined request, keep-alive noise) mean
                    // nothing to a stream: dropped.
                    Ok(_) => None,
                },
                () = ice.shutdown.cancelled() => Some("server stopping"),
            };
            if let Some(why) = end {
                return why;
            }
        }
    }

    /// Hears `session` of `mount` from now on, from its live edge.
    fn tune(&mut self, mount: Arc<Mount>, session: Arc<Session>) {
        (self.pos, self.prefix) = session.listener_start(4096);
        self.current = mount;
        self.session = session;
    }

    /// `/admin/moveclients`: re-registers on `dest` so counts and listclients follow the move.
    fn move_to(&mut self, dest: String, ice: &Icecast) -> Option<&'static str> {
        let dest_mount = ice.mount(&dest)?;
        self.registered.remove_listener(self.entry.id);
        if dest_mount.add_listener(self.entry.clone()).is_err() {
            // The destination filled up meanwhile: stay where we are (the place just freed is
            // ours again).
            let _ = self.registered.add_listener(self.entry.clone());
            return None;
        }
        self.home_gen = Some(dest_mount.generation.subscribe());
        self.registered = dest_mount;
        self.home = dest;
        match ice.resolve(&self.home) {
            Some((m, s)) => {
                self.tune(m, s);
                None
            }
            None => Some("moved to a mount with nothing playing"),
        }
    }

    /// Sends what the source published since the last time; Some(why) when the listener ends.
    async fn hear(&mut self, ice: &Icecast) -> Option<&'static str> {
        match self.session.read(&mut self.pos) {
            Read::Pending => None,
            Read::Data(mut chunks) => {
                if let Some(p) = self.prefix.take() {
                    chunks.insert(0, p);
                }
                let sent = send(
                    &mut self.stream,
                    &chunks,
                    self.icy.as_mut(),
                    &self.session,
                    self.pos,
                    self.queue_bytes,
                )
                .await;
                match sent {
                    Ok(n) => {
                        self.registered.counters.bytes_sent.inc_by(n);
                        if !self.entry.relay {
                            self.registered.usage.add_bytes(n);
                        }
                        ice.metrics.bytes_sent.inc_by(n);
                        None
                    }
                    Err(SendError::Gone) => Some("gone"),
                    Err(SendError::Stalled) => {
                        self.registered.counters.dropped_slow.inc();
                        ice.metrics.slow_drops.inc();
                        Some("stopped reading")
                    }
                }
            }
            Read::Lagged => {
                self.registered.counters.dropped_slow.inc();
                ice.metrics.slow_drops.inc();
                Some("fell behind by more than the queue")
            }
            Read::Ended => match ice.resolve(&self.home) {
                // The source left: carry on with the fallback, from its live edge.
                Some((m, s)) => {
                    self.tune(m, s);
                    None
                }
                None => Some("source ended"),
            },
        }
    }
}

async fn wait_generation(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Why sending to a listener stopped.
enum SendError {
    /// The connection failed or closed.
    Gone,
    /// The listener stopped taking data for longer than the queue (or the write timeout) allows.
    Stalled,
}

/// Writes chunks (with ICY blocks when asked); returns the audio bytes written.
///
/// While a write waits on a full socket, the source keeps going; if it gets more than the queue
/// ahead of `pos` (the listener's offset after these chunks), the listener is dropped then and
/// there instead of being noticed only when the write finally returns.
async fn send(
    stream: &mut TcpStream,
    chunks: &[Bytes],
    icy: Option<&mut Interleaver>,
    session: &Session,
    pos: u64,
    queue_bytes: u64,
) -> Result<u64, SendError> {
    let audio: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let pieces: Vec<Bytes> = match icy {
        Some(il) => {
            let meta = session.metadata();
            let mut out = Vec::with_capacity(chunks.len() * 2);
            for c in chunks {
                il.frame(c, &meta, &mut out);
            }
            out
        }
        None => chunks.to_vec(),
    };
    let lagging = || session.end().saturating_sub(pos) > queue_bytes;
    // One write per batch: copying a few KiB is cheaper than a system call per piece.
    let pieces = if pieces.len() > 1 {
        let total = pieces.iter().map(Bytes::len).sum();
        let mut one = Vec::with_capacity(total);
        for p in &pieces {
            one.extend_from_slice(p);
        }
        vec![Bytes::from(one)]
    } else {
        pieces
    };
    for p in &pieces {
        let mut buf = &p[..];
        let mut blocked = Duration::ZERO;
        while !buf.is_empty() {
            // `write` on a TcpStream writes nothing when cancelled, so the timeout is safe.
            match tokio::time::timeout(STALL_CHECK, stream.write(buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(SendError::Gone),
                Ok(Ok(n)) => {
                    buf = &buf[n..];
                    blocked = Duration::ZERO;
                }
                Err(_) => {
                    blocked += STALL_CHECK;
                    if lagging() || blocked >= WRITE_TIMEOUT {
                        return Err(SendError::Stalled);
                    }
                }
            }
        }
    }
    Ok(audio)
}

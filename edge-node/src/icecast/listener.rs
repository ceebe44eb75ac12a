//! Listeners: the Icecast reply head, the burst, then the mount's audio (with ICY metadata when
//! asked) until the listener leaves, is dropped for falling behind, or its source and every
//! fallback are gone. A listener whose mount lost its source keeps its connection and hears the
//! fallback, and goes back when the source returns.

use super::Icecast;
use crate::http::{Request, SERVER, respond};
use crate::icy::Interleaver;
use crate::mount::{Control, ListenerEntry, Mount, Read, Refused, Session};
use bytes::{Buf as _, Bytes};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;

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

/// A listener's task, for as long as the listener stays. The request comes boxed: an async
/// fn's arguments keep their room in its future for its whole life, and a request is a few
/// hundred bytes.
pub(crate) async fn serve(req: Box<Request>, ice: Arc<Icecast>) {
    // Taken out of its box in a block of its own: a box moved out of is freed where its
    // variable's scope ends, which would be when the listener leaves.
    let req = {
        let boxed = req;
        *boxed
    };
    // Boxed: what answering takes (the reply's writes) is not kept in the task for as long
    // as the listener stays.
    let Some(mut l) = Box::pin(Listening::start(req, &ice)).await else {
        return;
    };
    let end = l.run(&ice).await;
    l.registered.remove_listener(l.id);
    tracing::debug!(
        listener = l.id,
        mount = %l.registered.path,
        pos = l.pos,
        "listener left: {end}"
    );
}

/// A listener past its reply head: the mount it counts on, what it hears and how far it is.
///
/// Ten thousand of these live at once, each in its task's future: everything here and in
/// [`Listening::run`]'s waiting is kept small (the entry with its user agent stays in the
/// mount's table; the control line's waker lives in the line, not here).
struct Listening {
    stream: TcpStream,
    /// Counts the connection under the limits while the listener stays.
    _conn: Option<crate::http::ConnGuard>,
    id: u64,
    /// A relay edge pulling the mount: no usage counted.
    relay: bool,
    control: crate::mount::ControlRx,
    /// Where the listener counts: the mount asked for (or moved to), even while it hears a
    /// fallback.
    registered: Arc<Mount>,
    /// What it hears: the home mount or a fallback.
    current: Arc<Mount>,
    session: Arc<Session>,
    pos: u64,
    /// Codec headers the decoder needs first (Ogg), once per session joined; boxed, as most
    /// listeners have none for most of their time.
    prefix: Option<Box<Bytes>>,
    icy: Option<Interleaver>,
}

/// What woke a waiting listener.
enum Wake {
    Control(Option<Control>),
    /// The session published more, or ended.
    News,
    /// The connection failed.
    Gone,
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
        let Some((mut current, mut session)) = ice.resolve(&home) else {
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
        let (entry_id, relay) = (entry.id, entry.relay);
        if let Err(why) = home_mount.add_listener(entry) {
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
        // Kills at shutdown and returns from a fallback go to registered listeners: one that
        // registered after them looks for itself.
        if ice.shutdown.is_cancelled() {
            home_mount.remove_listener(entry_id);
            return None;
        }
        if let Some(now) = ice.resolve(&home) {
            (current, session) = now;
        }
        ice.metrics.listener_connects.inc();
        // The burst is measured from the moment of connection, before the reply head is written.
        let (pos, prefix) = session.listener_start(limits.burst_bytes);
        if tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(head.as_bytes()))
            .await
            .is_err()
        {
            home_mount.remove_listener(entry_id);
            return None;
        }
        Some(Listening {
            stream,
            _conn: conn,
            id: entry_id,
            relay,
            control,
            registered: home_mount,
            current,
            session,
            pos,
            prefix: prefix.map(Box::new),
            icy: metaint.map(|m| Interleaver::new(usize::try_from(m).unwrap_or(16_000))),
        })
    }

    /// Streams until the listener leaves, is dropped or has nothing left to hear; says why.
    async fn run(&mut self, ice: &Icecast) -> &'static str {
        // A player sends nothing after its request; watching the socket notices a reset at
        // once instead of at the next failed write, which keeps listener time (billed usage)
        // exact. A player that closes with unread audio resets; an end of its sending side only
        // (a client that half-closes after its request) keeps it listening, so that ends the
        // watch, not the stream.
        let mut watch_peer = true;
        loop {
            // Hand-polled rather than a `select!`: the futures of every branch would live in
            // the task for the listener's whole life; here only the session's `Notified` does.
            let wake = {
                let Listening {
                    control,
                    stream,
                    pos,
                    session,
                    ..
                } = &mut *self;
                let session: &Session = session;
                let mut notified = std::pin::pin!(session.notified());
                std::future::poll_fn(|cx| {
                    poll_wake(
                        cx,
                        control,
                        session,
                        notified.as_mut(),
                        *pos,
                        stream,
                        &mut watch_peer,
                    )
                })
                .await
            };
            let end = match wake {
                Wake::Control(None | Some(Control::Kill)) => Some(if ice.shutdown.is_cancelled() {
                    "server stopping"
                } else {
                    "killed"
                }),
                Wake::Control(Some(Control::Move(dest))) => {
                    let end = self.move_to(dest, ice);
                    // A move that failed may have stood in for a return (the line keeps a move
                    // over a return).
                    if end.is_none() {
                        self.follow_home(ice);
                    }
                    end
                }
                Wake::Control(Some(Control::Return)) => {
                    self.follow_home(ice);
                    None
                }
                Wake::News => self.hear(ice).await,
                Wake::Gone => Some("gone"),
            };
            if let Some(why) = end {
                return why;
            }
        }
    }

    /// Hears what its home resolves to now (its own source or a fallback), unless it hears that
    /// mount already.
    fn follow_home(&mut self, ice: &Icecast) {
        if let Some((m, s)) = ice.resolve(&self.registered.path)
            && !Arc::ptr_eq(&m, &self.current)
        {
            self.tune(m, s);
        }
    }

    /// Hears `session` of `mount` from now on, from its live edge.
    fn tune(&mut self, mount: Arc<Mount>, session: Arc<Session>) {
        let (pos, prefix) = session.listener_start(4096);
        (self.pos, self.prefix) = (pos, prefix.map(Box::new));
        self.current = mount;
        self.session = session;
    }

    /// `/admin/moveclients`: re-registers on `dest` so counts and listclients follow the move.
    fn move_to(&mut self, dest: String, ice: &Icecast) -> Option<&'static str> {
        let dest_mount = ice.mount(&dest)?;
        let entry = self.registered.remove_listener(self.id)?;
        if dest_mount.add_listener(entry.clone()).is_err() {
            // The destination filled up meanwhile: stay where we are, unless our own place was
            // taken meanwhile too (the entry, with the line's last sender, would be gone).
            return match self.registered.add_listener(entry) {
                Ok(()) => None,
                Err(_) => Some("no room to move or to stay"),
            };
        }
        self.registered = dest_mount;
        match ice.resolve(&dest) {
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
                    chunks.insert(0, *p);
                }
                let audio: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                let mut out = frame(chunks, self.icy.as_mut(), &self.session);
                let mut sent = write_now(&self.stream, &mut out);
                if sent.is_ok() && !out.is_empty() {
                    // The socket is full: wait for it, boxed so that the wait's timer is in the
                    // task only while a listener is behind.
                    let (session, pos) = (&self.session, self.pos);
                    sent = Box::pin(write_blocked(&self.stream, out, session, pos)).await;
                }
                match sent {
                    Ok(()) => {
                        self.registered.counters.bytes_sent.inc_by(audio);
                        if !self.relay {
                            self.registered.usage.add_bytes(audio);
                        }
                        ice.metrics.bytes_sent.inc_by(audio);
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
            Read::Ended => match ice.resolve(&self.registered.path) {
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

/// One poll of everything a waiting listener waits on, in order of precedence: a word on its
/// control line, news from its session, then its socket (a reset; bytes the player sends are
/// dropped). Each registers the task's waker before it looks, so nothing is missed.
fn poll_wake(
    cx: &mut Context<'_>,
    control: &mut crate::mount::ControlRx,
    session: &Session,
    mut notified: Pin<&mut Notified<'_>>,
    pos: u64,
    stream: &TcpStream,
    watch_peer: &mut bool,
) -> Poll<Wake> {
    if let Poll::Ready(word) = control.poll_recv(cx) {
        return Poll::Ready(Wake::Control(word));
    }
    // Enabled before looking, so a publish between the look and the wait still wakes.
    notified.as_mut().enable();
    if session.has_news(pos) || notified.poll(cx).is_ready() {
        return Poll::Ready(Wake::News);
    }
    while *watch_peer {
        match stream.poll_read_ready(cx) {
            Poll::Pending => break,
            Poll::Ready(Err(_)) => return Poll::Ready(Wake::Gone),
            Poll::Ready(Ok(())) => {}
        }
        let mut drop_bytes = [0u8; 64];
        match stream.try_read(&mut drop_bytes) {
            Ok(0) => *watch_peer = false,
            // Bytes after the request (a pipelined request, keep-alive noise) mean nothing to a
            // stream; a `WouldBlock` cleared the readiness, so the next look registers.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Poll::Ready(Wake::Gone),
        }
    }
    Poll::Pending
}

/// Why sending to a listener stopped.
enum SendError {
    /// The connection failed or closed.
    Gone,
    /// The listener stopped taking data for longer than the queue (or the write timeout) allows.
    Stalled,
}

/// The bytes to write for `chunks`: with ICY blocks when asked, in one buffer (copying a few KiB
/// is cheaper than a system call per piece).
fn frame(chunks: Vec<Bytes>, icy: Option<&mut Interleaver>, session: &Session) -> Bytes {
    let pieces = match icy {
        Some(il) => {
            let meta = session.metadata();
            let mut out = Vec::with_capacity(chunks.len() * 2);
            for c in &chunks {
                il.frame(c, &meta, &mut out);
            }
            out
        }
        None => chunks,
    };
    match <[Bytes; 1]>::try_from(pieces) {
        Ok([one]) => one,
        Err(pieces) => Bytes::from(pieces.concat()),
    }
}

/// Writes what the socket takes now, without waiting; `out` keeps the rest.
fn write_now(stream: &TcpStream, out: &mut Bytes) -> Result<(), SendError> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(0) => return Err(SendError::Gone),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(SendError::Gone),
        }
    }
    Ok(())
}

/// Writes the rest once the socket takes it.
///
/// While the write waits on a full socket, the source keeps going; if it gets more than the queue
/// ahead of `pos` (the listener's offset after these bytes), the listener is dropped then and
/// there instead of being noticed only when the write finally returns.
async fn write_blocked(
    stream: &TcpStream,
    mut out: Bytes,
    session: &Session,
    pos: u64,
) -> Result<(), SendError> {
    let mut blocked = Duration::ZERO;
    while !out.is_empty() {
        match tokio::time::timeout(STALL_CHECK, stream.writable()).await {
            Ok(Ok(())) => {
                let before = out.len();
                write_now(stream, &mut out)?;
                if out.len() < before {
                    blocked = Duration::ZERO;
                }
            }
            Ok(Err(_)) => return Err(SendError::Gone),
            Err(_) => {
                blocked += STALL_CHECK;
                if session.too_far_behind(pos) || blocked >= WRITE_TIMEOUT {
                    return Err(SendError::Stalled);
                }
            }
        }
    }
    Ok(())
}

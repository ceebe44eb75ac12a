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
use tokio::sync::mpsc;

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

pub(crate) async fn serve(mut req: Request, ice: Arc<Icecast>) {
    let mut home = req.head.path.clone();
    let Some(home_mount) = ice.mount(&home) else {
        let _ = respond(
            &mut req.stream,
            404,
            "text/plain",
            &[],
            b"The file you requested could not be found\n",
        )
        .await;
        return;
    };
    // Subscribe before resolving, so a source returning meanwhile is not missed.
    let mut home_gen = Some(home_mount.generation.subscribe());
    let Some((mut current, mut session)) = ice.resolve(&home) else {
        let _ = respond(
            &mut req.stream,
            404,
            "text/plain",
            &[],
            b"Source not found: nothing is playing on this mount\n",
        )
        .await;
        return;
    };
    let limits = ice.config().limits.clone();
    if limits.listener_send_buffer_bytes > 0 {
        let size = usize::try_from(limits.listener_send_buffer_bytes).unwrap_or(usize::MAX);
        let _ = socket2::SockRef::from(&req.stream).set_send_buffer_size(size);
    }
    let metaint =
        (wants_icy(&req) && icy_capable(&session.info.content_type)).then_some(limits.icy_metaint);
    let head = reply_head(&current, &session, metaint);
    if req.head.method == "HEAD" {
        let _ = req.stream.write_all(head.as_bytes()).await;
        return;
    }
    let id = ice.next_id();
    let (control_tx, mut control) = mpsc::unbounded_channel();
    let entry = ListenerEntry {
        id,
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
    let relay = entry.relay;
    // From here on only the socket is needed: the request head and the read buffer go, which
    // matters at ten thousand listeners.
    let Request { mut stream, .. } = req;
    let mut registered = home_mount.clone();
    if let Err(why) = registered.add_listener(entry.clone()) {
        // Icecast answers a full mount with 403; players know it as "server full".
        let body: &[u8] = match why {
            Refused::GroupFull => {
                b"Forbidden: this station's listener limit is reached on this server\n"
            }
            Refused::MountFull | Refused::Removed => b"Forbidden: max listeners reached\n",
        };
        let _ = respond(&mut stream, 403, "text/plain", &[], body).await;
        return;
    }
    ice.metrics.listener_connects.inc();
    // The burst is measured from the moment of connection, before the reply head is written.
    let (mut pos, mut prefix) = session.listener_start(limits.burst_bytes);
    if tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(head.as_bytes()))
        .await
        .is_err()
    {
        registered.remove_listener(id);
        return;
    }
    let mut icy = metaint.map(|m| Interleaver::new(usize::try_from(m).unwrap_or(16_000)));
    // A player sends nothing after its request; watching the socket notices a reset at once
    // instead of at the next failed write, which keeps listener time (billed usage) exact. A
    // player that closes with unread audio resets; an end of its sending side only (a client
    // that half-closes after its request) keeps it listening, so that ends the watch, not the
    // stream.
    let mut hangup = [0u8; 64];
    let mut watch_peer = true;
    let end = loop {
        let on_fallback = current.path != home;
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                None | Some(Control::Kill) => break "killed",
                Some(Control::Move(dest)) => {
                    let Some(dest_mount) = ice.mount(&dest) else { continue };
                    // Re-register on the destination so counts and listclients follow the move.
                    registered.remove_listener(id);
                    if dest_mount.add_listener(entry.clone()).is_err() {
                        // The destination filled up meanwhile: stay where we are (the place
                        // just freed is ours again).
                        let _ = registered.add_listener(entry.clone());
                        continue;
                    }
                    registered = dest_mount.clone();
                    home = dest;
                    home_gen = Some(dest_mount.generation.subscribe());
                    match ice.resolve(&home) {
                        Some((m, s)) => { (pos, prefix) = s.listener_start(4096); current = m; session = s; }
                        None => break "moved to a mount with nothing playing",
                    }
                }
            },
            () = session.wait(pos) => match session.read(&mut pos) {
                Read::Pending => {}
                Read::Data(mut chunks) => {
                    // Codec headers the decoder needs first (Ogg), once per session joined.
                    if let Some(p) = prefix.take() {
                        chunks.insert(0, p);
                    }
                    match send(&mut stream, &chunks, icy.as_mut(), &session, pos, limits.queue_bytes).await {
                        Ok(n) => {
                            registered.counters.bytes_sent.inc_by(n);
                            if !relay {
                                registered.usage.add_bytes(n);
                            }
                            ice.metrics.bytes_sent.inc_by(n);
                        }
                        Err(SendError::Gone) => break "gone",
                        Err(SendError::Stalled) => {
                            registered.counters.dropped_slow.inc();
                            ice.metrics.slow_drops.inc();
                            break "stopped reading";
                        }
                    }
                }
                Read::Lagged => {
                    registered.counters.dropped_slow.inc();
                    ice.metrics.slow_drops.inc();
                    break "fell behind by more than the queue";
                }
                Read::Ended => match ice.resolve(&home) {
                    // The source left: carry on with the fallback, from its live edge.
                    Some((m, s)) => { (pos, prefix) = s.listener_start(4096); current = m; session = s; }
                    None => break "source ended",
                },
            },
            changed = wait_generation(&mut home_gen), if on_fallback => {
                if !changed { continue; }
                // The home mount's source returned: go back to it.
                if let Some(m) = ice.mount(&home)
                    && let Some(s) = m.session()
                {
                    (pos, prefix) = s.listener_start(4096);
                    current = m;
                    session = s;
                }
            },
            r = stream.read(&mut hangup), if watch_peer => match r {
                Err(_) => break "gone",
                Ok(0) => watch_peer = false,
                // Bytes after the request (a pipelined request, keep-alive noise) mean nothing
                // to a stream: dropped.
                Ok(_) => {}
            },
            () = ice.shutdown.cancelled() => break "server stopping",
        }
    };
    registered.remove_listener(id);
    tracing::debug!(listener = id, mount = %home, pos, "listener left: {end}");
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

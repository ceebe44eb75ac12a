//! Source clients (`PUT` and legacy `SOURCE`): authentication before any `100 Continue`,
//! ice-*/icy-* headers into the stream's description, then the body (raw until close, or
//! chunked) pushed into the mount's session until the client leaves or falls silent.

use super::Icecast;
use crate::auth::{Login, Secret};
use crate::config::MountConfig;
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{RequestHead, basic_auth};
use crate::http::{Request, respond};
use crate::mount::{Coalescer, Session, SourceInfo};
use bytes::BytesMut;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Header names Icecast reads for each field, in order of preference.
fn first_header(head: &RequestHead, names: &[&str]) -> String {
    names
        .iter()
        .find_map(|n| head.header(n))
        .map(str::to_string)
        .unwrap_or_default()
}

/// The bitrate a source announces: `ice-audio-info` (`bitrate=` or `ice-bitrate=`), else
/// `icy-br`/`ice-bitrate`.
fn announced_bitrate(head: &RequestHead, audio_info: &str) -> u32 {
    audio_info
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == "bitrate" || k.trim() == "ice-bitrate")
        .and_then(|(_, v)| v.trim().parse().ok())
        .or_else(|| {
            head.header("icy-br")
                .or_else(|| head.header("ice-bitrate"))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn source_info(head: &RequestHead, ip: &str, content_type: &str) -> SourceInfo {
    let audio_info = first_header(head, &["ice-audio-info"]);
    let public = first_header(head, &["ice-public", "icy-pub", "x-audiocast-public"]);
    SourceInfo {
        content_type: content_type.to_string(),
        name: first_header(head, &["ice-name", "icy-name", "x-audiocast-name"]),
        description: first_header(
            head,
            &[
                "ice-description",
                "icy-description",
                "x-audiocast-description",
            ],
        ),
        genre: first_header(head, &["ice-genre", "icy-genre", "x-audiocast-genre"]),
        url: first_header(head, &["ice-url", "icy-url", "x-audiocast-url"]),
        public: public.trim() == "1",
        bitrate: announced_bitrate(head, &audio_info),
        audio_info,
        user_agent: first_header(head, &["user-agent"]),
        ip: ip.to_string(),
        relay: false,
        user: String::new(),
        credentials: None,
    }
}

const ALLOW: (&str, &str) = ("Allow", "GET, HEAD, OPTIONS, PUT, SOURCE");

pub(crate) async fn serve(mut req: Request, ice: Arc<Icecast>) {
    let path = req.head.path.clone();
    let Some(mount) = ice.mount(&path) else {
        let _ = respond(
            &mut req.stream,
            404,
            "text/plain",
            &[ALLOW],
            b"No such mountpoint\n",
        )
        .await;
        return;
    };
    let cfg = mount.config();
    let limits = ice.config().limits.clone();
    let (user, login) = authenticate(&ice, &req.head, req.peer.ip(), &path, &cfg).await;
    let refusal: Option<(u16, String, &[u8])> = match login {
        Login::Accepted => None,
        Login::Refused => Some((401, String::new(), b"You need to authenticate\n")),
        Login::Busy => Some((
            503,
            "1".to_string(),
            b"Too many logins are being checked: try again in a moment\n",
        )),
        Login::LockedOut(wait) => Some((
            429,
            wait.as_millis().div_ceil(1000).max(1).to_string(),
            b"Too many failed logins from this address or for this user: try again later\n",
        )),
    };
    if let Some((status, retry_after, body)) = refusal {
        let mut headers = vec![ALLOW];
        if status == 401 {
            headers.push(("WWW-Authenticate", "Basic realm=\"Icecast2 Server\""));
        } else {
            ice.metrics.login_throttled.inc();
            headers.push(("Retry-After", &retry_after));
        }
        let _ = respond(&mut req.stream, status, "text/plain", &headers, body).await;
        return;
    }
    let content_type = match req.head.header("content-type") {
        Some(ct) if !ct.is_empty() => ct.to_string(),
        // A legacy SOURCE without Content-Type is MP3; a PUT must say what it sends.
        _ if req.head.method == "SOURCE" => "audio/mpeg".to_string(),
        _ => {
            let _ = respond(
                &mut req.stream,
                403,
                "text/plain",
                &[],
                b"No Content-type given\n",
            )
            .await;
            return;
        }
    };
    let mut info = source_info(&req.head, &req.peer.ip().to_string(), &content_type);
    let (_, password) = basic_auth(&req.head).unwrap_or_default();
    info.credentials = Some(ice.logins.digest(&user, &password));
    info.user = user;
    let session = Session::start(info, &limits);
    if !mount.attach(session.clone()) {
        let _ = respond(
            &mut req.stream,
            403,
            "text/plain",
            &[],
            b"Mountpoint in use\n",
        )
        .await;
        return;
    }
    tracing::info!(content_type, "source connected");
    let chunked = req
        .head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let expects_continue = req
        .head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    // As Icecast 2.4.4: `100 Continue` (only after authentication) and then `200 OK`.
    let mut reply = Vec::new();
    if expects_continue {
        reply.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    reply.extend_from_slice(b"HTTP/1.0 200 OK\r\nServer: ");
    reply.extend_from_slice(crate::http::SERVER.as_bytes());
    reply.extend_from_slice(b"\r\n\r\n");
    let result = async {
        req.stream.write_all(&reply).await?;
        receive(&mut req, &session, chunked, limits.source_timeout()).await
    }
    .await;
    mount.detach(&session);
    match result {
        Ok(end) => tracing::info!(bytes = session.end(), "source left: {end}"),
        Err(e) => tracing::info!(bytes = session.end(), "source dropped: {e}"),
    }
}

/// Reads the body into the session, in coalesced chunks. Returns why it ended.
async fn receive(
    req: &mut Request,
    session: &Arc<Session>,
    chunked: bool,
    timeout: std::time::Duration,
) -> std::io::Result<&'static str> {
    let mut decoder = chunked.then(ChunkedDecoder::new);
    let mut co = Coalescer::default();
    let mut pieces = Vec::new();
    // Returns true at the end of a chunked body.
    let mut take = |data: &[u8], co: &mut Coalescer| -> std::io::Result<bool> {
        match &mut decoder {
            Some(d) => {
                d.feed(data, &mut pieces).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))
                })?;
                for p in pieces.drain(..) {
                    co.add(&p);
                }
                Ok(d.is_done())
            }
            None => {
                co.add(data);
                Ok(false)
            }
        }
    };
    let leftover = std::mem::take(&mut req.leftover);
    if take(&leftover, &mut co)? {
        co.flush(session);
        return Ok("end of chunked body");
    }
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut heard = Instant::now();
    let result = loop {
        let silence_deadline = heard + timeout;
        let wake = co
            .deadline()
            .map_or(silence_deadline, |d| d.min(silence_deadline));
        buf.clear();
        let read = tokio::select! {
            r = tokio::time::timeout_at(wake.into(), req.stream.read_buf(&mut buf)) => r,
            () = session.kill.notified() => break Ok("killed by admin"),
        };
        if session.killed.load(std::sync::atomic::Ordering::Acquire) {
            break Ok("killed by admin");
        }
        match read {
            Err(_) if Instant::now() >= silence_deadline => {
                break Ok("silent for longer than the source timeout");
            }
            Err(_) => co.flush(session),
            Ok(Err(e)) => break Err(e),
            Ok(Ok(0)) => break Ok("connection closed"),
            Ok(Ok(_)) => {
                heard = Instant::now();
                if take(&buf, &mut co)? {
                    break Ok("end of chunked body");
                }
                if co.due() {
                    co.flush(session);
                }
            }
        }
    };
    co.flush(session);
    result
}

/// Checks a request's Basic credentials for a mount: `source` with the mount's source password,
/// or one of its DJ accounts, through the node's bounded and throttled login checker (`auth`).
/// `/admin/metadata` asks the same question of credentials other than those the source on air
/// logged in with. No credentials at all is a refusal that counts no
/// failure: libshout probes that way and reads `Allow` from the 401.
pub(crate) async fn authenticate(
    ice: &Icecast,
    head: &RequestHead,
    peer: IpAddr,
    path: &str,
    cfg: &MountConfig,
) -> (String, Login) {
    let (user, pass) = basic_auth(head).unwrap_or_default();
    if user.is_empty() && pass.is_empty() {
        return (user, Login::Refused);
    }
    let secret = if user == "source" {
        Secret::Plain(&cfg.source_password)
    } else {
        cfg.source_users
            .iter()
            .find(|u| u.user == user)
            .map_or(Secret::Unknown, |u| Secret::Argon2(&u.password_hash))
    };
    let limits = ice.config().limits.clone();
    let account = format!("{user}@{path}");
    let login = ice
        .logins
        .check(&limits, peer, &account, &pass, secret)
        .await;
    (user, login)
}

//! `GET /hls-audio{mount}/index.m3u8[?s=TOKEN]` and `GET /hls-audio{mount}/{seq}.mp3|.aac`.
//!
//! The playlist request is the listener: it admits or renews the session (a 403 with a
//! sentence when the mount's or the station's limit is reached), and is never cached. Segments
//! are the same bytes for everyone, named by a number never reused (not even by a restarted
//! node), so caches and CDNs may keep them; their bytes are metered as the mount's usage.

use super::packer::Feed;
use super::sessions::{Client, Refusal};
use super::{AudioHls, MountHls};
use crate::http::{Answer, Request, reply};
use crate::mount::Refused;
use crate::sync::lock;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The first path segment of the audio HLS routes.
pub(crate) const PREFIX: &str = "/hls-audio";

async fn plain(req: &mut Request, status: u16, msg: &str) {
    let body = format!("{msg}\n");
    let retry: &[(&str, &str)] = if status == 503 {
        &[("Retry-After", "2")]
    } else {
        &[]
    };
    let answer = Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        cache_control: "no-cache",
        headers: retry,
        body: body.as_bytes(),
        head_only: req.head.method == "HEAD",
    };
    let _ = reply(req, &answer).await;
}

/// Answers a request under [`PREFIX`].
pub(crate) async fn serve(req: &mut Request, hls: &AudioHls) {
    let path = req.head.path.clone();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let Some((mount, file)) = rest.rsplit_once('/').filter(|(m, _)| !m.is_empty()) else {
        let msg = "Ask for /hls-audio/MOUNT/index.m3u8, MOUNT being the mount's path";
        return plain(req, 404, msg).await;
    };
    if !hls.enabled() {
        let msg = "This server does not serve its mounts as HLS (audio_hls.enabled is false)";
        return plain(req, 404, msg).await;
    }
    let Some(h) = hls.get(mount) else {
        let msg = if hls.has_mount(mount) {
            format!("Mount {mount} is not served as HLS on this server")
        } else {
            format!("There is no mount {mount} on this server")
        };
        return plain(req, 404, &msg).await;
    };
    if file == "index.m3u8" {
        return playlist(req, hls, &h).await;
    }
    let seq = file
        .split_once('.')
        .and_then(|(n, ext)| Some((n.parse::<u64>().ok()?, ext)));
    let segment = seq.and_then(|(n, ext)| {
        let p = lock(&h.packer);
        p.segment(n)
            .filter(|s| s.codec.extension() == ext)
            .map(|s| (s.data.clone(), s.codec.content_type()))
    });
    let Some((data, ctype)) = segment else {
        let msg = "No such segment (it may have left the playlist window)";
        return plain(req, 404, msg).await;
    };
    // Immutable, but only as long as a player can want it: a few windows.
    let cache = format!(
        "public, max-age={}",
        (h.settings.segment_ms * h.settings.window * 3).div_ceil(1000)
    );
    let head_only = req.head.method == "HEAD";
    let answer = Answer {
        status: 200,
        content_type: ctype,
        cache_control: &cache,
        headers: &[],
        body: &data,
        head_only,
    };
    if reply(req, &answer).await.is_ok() && !head_only {
        let n = data.len() as u64;
        let m = hls.metrics();
        m.audio_hls.segments_served.inc();
        m.audio_hls.bytes_sent.inc_by(n);
        m.bytes_sent.inc_by(n);
        h.mount.counters.bytes_sent.inc_by(n);
        h.mount.usage.add_bytes(n);
    }
}

/// The session token of a query, if any: `Err` with a sentence when it is malformed.
fn token(query: &str) -> Result<Option<String>, String> {
    let Some(t) = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "s")
        .map(|(_, v)| v.into_owned())
    else {
        return Ok(None);
    };
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(Some(t))
    } else {
        Err("The session token s must be 1 to 64 letters, digits, '-' or '_'".to_string())
    }
}

/// The playlist, once there is a segment (waiting up to a segment's time for the first).
async fn playlist(req: &mut Request, hls: &AudioHls, h: &Arc<MountHls>) {
    let token = match token(&req.head.query) {
        Ok(t) => t,
        Err(msg) => return plain(req, 400, &msg).await,
    };
    let path = &h.mount.path;
    let wait = Duration::from_millis(h.settings.segment_ms + 2000);
    let deadline = tokio::time::Instant::now() + wait;
    let body = loop {
        let mut progress = h.progress.subscribe();
        let (list, feed) = {
            let p = lock(&h.packer);
            (p.playlist(), p.feed().clone())
        };
        match (list, feed) {
            (Some(list), _) => break list,
            (None, Feed::Unsupported(ct)) => {
                let msg = format!(
                    "Mount {path} carries {ct}: HLS is made only of MP3 and AAC mounts; listen \
                     to {path} itself instead"
                );
                return plain(req, 404, &msg).await;
            }
            (None, Feed::Silent) => {
                let msg = format!("Nothing is playing on mount {path} right now");
                return plain(req, 404, &msg).await;
            }
            (None, Feed::Packing(_)) => {
                if tokio::time::timeout_at(deadline, progress.changed())
                    .await
                    .is_err()
                {
                    let msg = format!("The first segment of {path} is not ready yet; retry");
                    return plain(req, 503, &msg).await;
                }
            }
        }
    };
    let head_only = req.head.method == "HEAD";
    if !head_only {
        let client = Client {
            token: token.as_deref(),
            ip: req.peer.ip(),
            user_agent: req.head.header("user-agent").unwrap_or_default(),
        };
        let m = hls.metrics();
        match h
            .sessions
            .touch(&client, std::time::Instant::now(), || hls.next_id())
        {
            Ok(true) => {
                m.audio_hls.sessions.inc();
                m.listener_connects.inc();
            }
            Ok(false) => {}
            Err(why) => {
                m.audio_hls.refused.inc();
                let msg = match why {
                    Refusal::Full(Refused::GroupFull) => {
                        "Forbidden: this station's listener limit is reached on this server"
                    }
                    Refusal::Full(Refused::MountFull | Refused::Removed) => {
                        "Forbidden: max listeners reached"
                    }
                    Refusal::Killed => {
                        "This listening session was ended by the server's administrator; \
                         reload to listen again"
                    }
                };
                return plain(req, 403, msg).await;
            }
        }
    }
    let body = Bytes::from(body);
    let answer = Answer {
        status: 200,
        content_type: "application/vnd.apple.mpegurl",
        cache_control: "no-cache, no-store",
        headers: &[],
        body: &body,
        head_only,
    };
    if reply(req, &answer).await.is_ok() && !head_only {
        let m = hls.metrics();
        m.audio_hls.playlists.inc();
        m.audio_hls.bytes_sent.inc_by(body.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::token;

    #[test]
    fn session_tokens() {
        assert_eq!(token(""), Ok(None));
        assert_eq!(token("a=1&s=Ab-9_z"), Ok(Some("Ab-9_z".into())));
        assert!(token("s=").is_err());
        assert!(token("s=a%20b").is_err());
        assert!(token(&format!("s={}", "a".repeat(65))).is_err());
    }
}

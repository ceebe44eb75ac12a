//! Viewers of a live stream. HLS players make one HTTP request per playlist refresh and per
//! segment and hold no connection, so a viewer is a playback session: requests from one client
//! (its token's viewer id, address and User-Agent) with no gap longer than the viewer timeout.
//! Viewer time is the media time of the segments served, so a player that stalls or leaves
//! stops adding time at once; it feeds the same usage reports as listener time.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    /// Session key → when it was last seen.
    sessions: HashMap<u64, Instant>,
    /// New sessions since the last take.
    started: u64,
    /// Most sessions active at once since the last take.
    peak: u64,
    /// Media milliseconds of segments served since the last take.
    viewer_ms: u64,
    bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Viewers {
    timeout: Duration,
    inner: Mutex<Inner>,
}

/// What viewers used since the previous take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ViewerUsage {
    pub viewer_ms: u64,
    pub sessions: u64,
    pub peak: u64,
    pub bytes: u64,
}

impl Viewers {
    pub(crate) fn new(timeout: Duration) -> Viewers {
        Viewers {
            timeout,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn prune(&self, inner: &mut Inner, now: Instant) {
        let timeout = self.timeout;
        inner
            .sessions
            .retain(|_, last| now.saturating_duration_since(*last) <= timeout);
    }

    /// A request of session `key` that sent `bytes`, carrying `media_ms` of media (segments).
    pub(crate) fn request(&self, key: u64, now: Instant, bytes: u64, media_ms: u64) {
        let mut inner = lock(&self.inner);
        self.prune(&mut inner, now);
        if inner.sessions.insert(key, now).is_none() {
            inner.started += 1;
        }
        inner.peak = inner.peak.max(inner.sessions.len() as u64);
        inner.bytes += bytes;
        inner.viewer_ms += media_ms;
    }

    /// Sessions active now.
    pub(crate) fn current(&self, now: Instant) -> u64 {
        let mut inner = lock(&self.inner);
        self.prune(&mut inner, now);
        inner.sessions.len() as u64
    }

    /// What accrued since the previous take; the peak starts again from the sessions active now.
    pub(crate) fn take(&self, now: Instant) -> ViewerUsage {
        let mut inner = lock(&self.inner);
        self.prune(&mut inner, now);
        let active = inner.sessions.len() as u64;
        let out = ViewerUsage {
            viewer_ms: std::mem::take(&mut inner.viewer_ms),
            sessions: std::mem::take(&mut inner.started),
            peak: inner.peak.max(active),
            bytes: std::mem::take(&mut inner.bytes),
        };
        inner.peak = active;
        out
    }
}

/// The session key of a request: the token's viewer id, the client address and its User-Agent.
pub(crate) fn session_key(viewer: &str, ip: std::net::IpAddr, user_agent: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    viewer.hash(&mut h);
    ip.hash(&mut h);
    user_agent.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_after_the_timeout_and_time_is_what_was_served() {
        let v = Viewers::new(Duration::from_secs(10));
        let t0 = Instant::now();
        v.request(1, t0, 100, 0);
        v.request(1, t0 + Duration::from_secs(2), 5000, 2000);
        v.request(2, t0 + Duration::from_secs(3), 5000, 2000);
        assert_eq!(v.current(t0 + Duration::from_secs(4)), 2);
        // Session 1 is silent for more than 10 s: gone; session 2 goes on.
        v.request(2, t0 + Duration::from_secs(12), 5000, 2000);
        assert_eq!(v.current(t0 + Duration::from_secs(13)), 1);
        let u = v.take(t0 + Duration::from_secs(13));
        assert_eq!(
            u,
            ViewerUsage {
                viewer_ms: 6000,
                sessions: 2,
                peak: 2,
                bytes: 15_100
            }
        );
        // Session 1 again after its timeout is a new session.
        v.request(1, t0 + Duration::from_secs(14), 0, 0);
        let u = v.take(t0 + Duration::from_secs(14));
        assert_eq!((u.sessions, u.peak, u.viewer_ms), (1, 2, 0));
    }
}

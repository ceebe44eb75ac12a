//! HLS listeners of one mount. An HLS player holds no connection: it reloads the playlist about
//! every target duration and fetches segments. So a listener is a session: the `s` token of the
//! playlist URL (the redirector hands one out per listener), or, without one, the client's
//! address and User-Agent. A new session takes a place in the mount's listener table like an
//! Icecast listener, so the mount's and the station's limits, the listener counts,
//! `/admin/listclients` and the metered usage apply unchanged; it ends when no playlist request
//! came for the session timeout (or an admin kills it). Its listener time runs from its first
//! playlist request to its last one plus one target duration (the audio that playlist let it
//! play), never to the moment the timeout noticed it gone.

use crate::mount::{Control, ListenerEntry, Mount, Refused};
use crate::sync::lock;
use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a playlist request gets no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The mount's or the station's listener limit.
    Full(Refused),
    /// An admin disconnected this session (its next request starts a new one).
    Killed,
}

struct Held {
    id: u64,
    last: Instant,
    control: crate::mount::ControlRx,
}

/// Who asks, as far as an HTTP request tells.
pub(crate) struct Client<'a> {
    /// The `s` query parameter, if any.
    pub token: Option<&'a str>,
    pub ip: IpAddr,
    pub user_agent: &'a str,
}

pub(crate) struct Sessions {
    mount: Arc<Mount>,
    timeout: Duration,
    /// What a playlist lets a player play after it was fetched: one target duration.
    play: Duration,
    keys: std::collections::hash_map::RandomState,
    held: Mutex<HashMap<u64, Held>>,
}

impl Sessions {
    pub(crate) fn new(mount: Arc<Mount>, timeout: Duration, play: Duration) -> Sessions {
        Sessions {
            mount,
            timeout,
            play,
            keys: std::collections::hash_map::RandomState::new(),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, c: &Client<'_>) -> u64 {
        let mut h = self.keys.build_hasher();
        match c.token {
            Some(t) => ("token", t).hash(&mut h),
            None => ("client", c.ip, c.user_agent).hash(&mut h),
        }
        h.finish()
    }

    /// A playlist request of `client` at `now`: its session goes on, or a new one is admitted
    /// (Ok(true)) if the limits allow.
    pub(crate) fn touch(
        &self,
        client: &Client<'_>,
        now: Instant,
        next_id: impl FnOnce() -> u64,
    ) -> Result<bool, Refusal> {
        let key = self.key(client);
        let mut held = lock(&self.held);
        if let Some(h) = held.get_mut(&key) {
            if killed(&mut h.control) {
                let id = h.id;
                held.remove(&key);
                self.mount.remove_listener_at(id, now);
                return Err(Refusal::Killed);
            }
            h.last = now;
            return Ok(false);
        }
        let (tx, control) = crate::mount::control_line();
        let entry = ListenerEntry {
            id: next_id(),
            ip: client.ip,
            user_agent: client.user_agent.chars().take(256).collect(),
            connected_at: now,
            control: tx,
            relay: false,
            since: now,
            group: None,
        };
        let id = entry.id;
        self.mount.add_listener(entry).map_err(Refusal::Full)?;
        held.insert(
            key,
            Held {
                id,
                last: now,
                control,
            },
        );
        Ok(true)
    }

    /// Ends the sessions silent for longer than the timeout, or killed; returns how many.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let mut held = lock(&self.held);
        let before = held.len();
        held.retain(|_, h| {
            let gone = killed(&mut h.control);
            if gone || now.saturating_duration_since(h.last) > self.timeout {
                self.mount
                    .remove_listener_at(h.id, (h.last + self.play).min(now));
                return false;
            }
            true
        });
        before - held.len()
    }

    /// Ends every session (the mount or its HLS went away).
    pub(crate) fn close(&self, now: Instant) {
        for (_, h) in lock(&self.held).drain() {
            self.mount
                .remove_listener_at(h.id, (h.last + self.play).min(now));
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.held).len()
    }
}

/// Whether an admin asked this session to end (a move or a return is no use to an HLS player:
/// ignored).
fn killed(control: &mut crate::mount::ControlRx) -> bool {
    loop {
        match control.try_recv() {
            Ok(Control::Kill) | Err(crate::mount::NoWord::Closed) => return true,
            Ok(Control::Move(_) | Control::Return) => {}
            Err(crate::mount::NoWord::Empty) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MountConfig;
    use crate::metrics::Counters;

    fn mount(max: Option<u64>) -> Arc<Mount> {
        Arc::new(Mount::new(
            MountConfig {
                max_listeners: max,
                ..MountConfig::new("/m", "p")
            },
            Counters::detached(),
            Arc::default(),
            None,
        ))
    }

    fn client<'a>(token: Option<&'a str>, ua: &'a str) -> Client<'a> {
        Client {
            token,
            ip: IpAddr::from([127, 0, 0, 1]),
            user_agent: ua,
        }
    }

    #[test]
    fn a_session_is_a_listener_until_its_requests_stop() {
        let m = mount(Some(2));
        let s = Sessions::new(m.clone(), Duration::from_secs(12), Duration::from_secs(4));
        let t0 = Instant::now();
        let mut ids = 0..;
        let mut id = || ids.next().unwrap_or(0);
        assert_eq!(s.touch(&client(Some("a"), "x"), t0, &mut id), Ok(true));
        assert_eq!(s.touch(&client(Some("a"), "y"), t0, &mut id), Ok(false));
        // Without a token: address and User-Agent.
        assert_eq!(s.touch(&client(None, "x"), t0, &mut id), Ok(true));
        assert_eq!(m.listener_count(), 2);
        assert_eq!(
            s.touch(&client(Some("b"), "x"), t0, &mut id),
            Err(Refusal::Full(Refused::MountFull)),
            "max_listeners = 2 holds for HLS sessions too"
        );
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.touch(&client(Some("a"), "x"), t1, &mut id), Ok(false));
        assert_eq!(s.sweep(t0 + Duration::from_secs(13)), 1, "the silent one");
        assert_eq!(m.listener_count(), 1);
        // Listener time of the ended one: its request, plus what that playlist let it play
        // (the table stamps its admission a moment after t0).
        let ms = |m: &Mount| m.usage.take("/m", Duration::ZERO).listener_ms;
        assert!((3_990..=4_000).contains(&ms(&m)));
        assert_eq!(s.sweep(t1 + Duration::from_secs(13)), 1);
        assert!((13_990..=14_000).contains(&ms(&m)));
        assert_eq!((m.listener_count(), s.len()), (0, 0));
    }

    #[test]
    fn an_admin_kill_ends_the_session() {
        let m = mount(None);
        let s = Sessions::new(m.clone(), Duration::from_secs(12), Duration::from_secs(4));
        let t0 = Instant::now();
        assert_eq!(s.touch(&client(Some("a"), "x"), t0, || 7), Ok(true));
        for e in lock(&m.listeners).values() {
            e.control.send(Control::Kill);
        }
        assert_eq!(
            s.touch(&client(Some("a"), "x"), t0, || 8),
            Err(Refusal::Killed)
        );
        assert_eq!(m.listener_count(), 0);
        assert_eq!(s.touch(&client(Some("a"), "x"), t0, || 9), Ok(true));
        s.close(t0);
        assert_eq!(m.listener_count(), 0);
    }
}

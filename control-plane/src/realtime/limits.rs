//! Rate limits of the gateway: a token bucket per user for messages (over all their devices on
//! this replica) and one per connection for events of any kind.
//!
//! Written here rather than with a rate-limiting crate: a bucket is a few lines, it must say
//! when to retry (the error ack carries it), and its clock is injected so the tests need no
//! sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages a user may send at once, and per second after that.
pub const MESSAGE_BURST: f64 = 20.0;
pub const MESSAGES_PER_SEC: f64 = 10.0;

/// Chat messages a user may say at once in streams' chats, per second after that, and how long
/// saying more mutes them (Owncast's rule: a short burst, then a timed mute with a notice).
pub const CHAT_BURST: f64 = 3.0;
pub const CHAT_PER_SEC: f64 = 1.5;
pub const CHAT_MUTE: Duration = Duration::from_secs(10);

/// Calls a user may make at once, and per second after that (one every 5 s): enough to call
/// again after a missed call, not to ring a creator's devices in a loop.
pub const CALL_BURST: f64 = 5.0;
pub const CALLS_PER_SEC: f64 = 0.2;

/// Events one connection may send at once, and per second after that.
pub const EVENT_BURST: f64 = 60.0;
pub const EVENTS_PER_SEC: f64 = 30.0;

/// A token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(burst: f64, per_sec: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            per_sec,
            at: now,
        }
    }

    /// Takes one token at `now`; when there is none, how many milliseconds until there is.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.per_sec) * 1000.0).ceil() as u64)
        }
    }
}

/// The per-connection bucket, kept in the socket's extensions.
#[derive(Debug, Clone)]
pub struct Connection(Arc<Mutex<Bucket>>);

impl Default for Connection {
    fn default() -> Self {
        Connection(Arc::new(Mutex::new(Bucket::new(
            EVENT_BURST,
            EVENTS_PER_SEC,
            Instant::now(),
        ))))
    }
}

impl Connection {
    pub fn take(&self) -> Result<(), u64> {
        onda_shared::sync::lock(&self.0).take(Instant::now())
    }
}

/// The per-user message buckets of this replica.
#[derive(Debug, Default)]
pub struct Limits {
    users: Mutex<HashMap<(String, String), Bucket>>,
    chat: Mutex<HashMap<(String, String), Chatter>>,
    calls: Mutex<HashMap<(String, String), Bucket>>,
}

/// A user's chat bucket, and the end of their mute once they overran it.
#[derive(Debug, Clone)]
struct Chatter {
    bucket: Bucket,
    muted_until: Option<Instant>,
}

/// Why a chat message is held back: milliseconds to wait, and whether this message started
/// the mute (so its notice says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Muted {
    pub ms: u64,
    pub now: bool,
}

impl Limits {
    /// One message of the user; when over the limit, milliseconds until they may send again.
    pub fn message(&self, tenant_id: &str, user_id: &str) -> Result<(), u64> {
        let now = Instant::now();
        onda_shared::sync::lock(&self.users)
            .entry((tenant_id.to_string(), user_id.to_string()))
            .or_insert_with(|| Bucket::new(MESSAGE_BURST, MESSAGES_PER_SEC, now))
            .take(now)
    }

    /// One call the user makes; when over the limit, milliseconds until they may call again.
    pub fn call(&self, tenant_id: &str, user_id: &str) -> Result<(), u64> {
        let now = Instant::now();
        onda_shared::sync::lock(&self.calls)
            .entry((tenant_id.to_string(), user_id.to_string()))
            .or_insert_with(|| Bucket::new(CALL_BURST, CALLS_PER_SEC, now))
            .take(now)
    }

    /// One chat message of the user at `now`: over the burst, they are muted for
    /// [`CHAT_MUTE`] (the bucket refills meanwhile).
    pub fn chat(&self, tenant_id: &str, user_id: &str, now: Instant) -> Result<(), Muted> {
        let mut chat = onda_shared::sync::lock(&self.chat);
        let c = chat
            .entry((tenant_id.to_string(), user_id.to_string()))
            .or_insert_with(|| Chatter {
                bucket: Bucket::new(CHAT_BURST, CHAT_PER_SEC, now),
                muted_until: None,
            });
        if let Some(until) = c.muted_until {
            if now < until {
                let ms = until.saturating_duration_since(now).as_millis();
                return Err(Muted {
                    ms: u64::try_from(ms).unwrap_or(u64::MAX).max(1),
                    now: false,
                });
            }
            c.muted_until = None;
            c.bucket = Bucket::new(CHAT_BURST, CHAT_PER_SEC, now);
        }
        c.bucket.take(now).map_err(|_| {
            c.muted_until = Some(now + CHAT_MUTE);
            Muted {
                ms: u64::try_from(CHAT_MUTE.as_millis()).unwrap_or(u64::MAX),
                now: true,
            }
        })
    }

    /// The user left this replica: their buckets go (a full one is the same as none; a mute
    /// ends with the last connection).
    pub fn forget(&self, tenant_id: &str, user_id: &str) {
        let key = (tenant_id.to_string(), user_id.to_string());
        onda_shared::sync::lock(&self.users).remove(&key);
        onda_shared::sync::lock(&self.chat).remove(&key);
        onda_shared::sync::lock(&self.calls).remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chatter_gets_three_at_once_then_a_mute_then_a_fresh_burst() {
        let limits = Limits::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.chat("t", "fan", t0).is_ok());
        }
        assert_eq!(
            limits.chat("t", "fan", t0),
            Err(Muted {
                ms: 10_000,
                now: true
            })
        );
        // Others are not held.
        assert!(limits.chat("t", "other", t0).is_ok());
        let during = t0 + Duration::from_secs(4);
        assert_eq!(
            limits.chat("t", "fan", during),
            Err(Muted {
                ms: 6_000,
                now: false
            })
        );
        let after = t0 + CHAT_MUTE;
        for _ in 0..3 {
            assert!(limits.chat("t", "fan", after).is_ok());
        }
        // A steady 1 message a second never mutes.
        let limits = Limits::default();
        for i in 0..30 {
            assert!(
                limits
                    .chat("t", "calm", t0 + Duration::from_secs(i))
                    .is_ok()
            );
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_and_says_when() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3.0, 2.0, t0);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        assert_eq!(b.take(t0), Err(500));
        assert_eq!(b.take(t0 + Duration::from_millis(250)), Err(250));
        assert!(b.take(t0 + Duration::from_millis(500)).is_ok());
        // Idle time refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }
}

//! Rate limits of the gateway: a token bucket per user for messages (over all their devices on
//! this replica) and one per connection for events of any kind.
//!
//! Written here rather than with a rate-limiting crate: a bucket is a few lines, it must say
//! when to retry (the error ack carries it), and its clock is injected so the tests need no
//! sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Messages a user may send at once, and per second after that.
pub const MESSAGE_BURST: f64 = 20.0;
pub const MESSAGES_PER_SEC: f64 = 10.0;

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

    /// The user left this replica: their bucket goes (a full one is the same as none).
    pub fn forget(&self, tenant_id: &str, user_id: &str) {
        onda_shared::sync::lock(&self.users).remove(&(tenant_id.to_string(), user_id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

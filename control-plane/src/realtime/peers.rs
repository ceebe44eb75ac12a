//! Whether any other control-plane replica serves the gateway right now, so that a replica on
//! its own sends events to its own sockets only.
//!
//! On PostgreSQL every emit through socketioxide-postgres first publishes the packet with
//! `pg_notify` for the other replicas, and waits for it, before delivering locally: a message
//! costs three NOTIFYs (its two `receive-message`s and the notification) that the database must
//! commit and fan out, and that this replica then receives back on its LISTEN connection. With
//! one replica nobody else listens, and measured at 2,000 messages a second that was a third of
//! this process's CPU and most of the delivery latency (bench-realtime: p50 140 ms with the
//! NOTIFYs, 6 ms without). socketioxide-postgres knows how many servers there are (its
//! heartbeats) but does not expose it, so this module keeps its own answer:
//!
//! - Every replica beats in `realtime_replicas` every `HEARTBEAT`; each beat also reads whether
//!   another replica beat within `DEAD_AFTER` ([`Peers::saw_others`]).
//! - A replica announces itself with a NOTIFY on [`CHANNEL`] when its gateway starts, before it
//!   accepts a connection; every replica LISTENs, so the others stop sending locally within
//!   milliseconds, not at their next beat.
//! - Any sign of another replica holds for `DEAD_AFTER`. Until this replica's own LISTEN is up
//!   (and whenever it is lost) it is never "alone": it falls back to publishing every emit.
//!
//! What is left: an event emitted in the milliseconds between a new replica's announcement and
//! its arrival here reaches only this replica's sockets — a client of the new replica could
//! only have connected within those same milliseconds, and finds the event in its recovery
//! feed on its next reconnect, and the database holds it for REST.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// The LISTEN/NOTIFY channel on which a starting replica announces itself.
pub const CHANNEL: &str = "onda_gateway_replicas";

#[derive(Debug, Default)]
pub struct Peers {
    /// Until when (ms since the epoch) another replica may be serving.
    others_until_ms: AtomicI64,
    /// This replica hears announcements (its LISTEN connection is up).
    listening: AtomicBool,
}

impl Peers {
    /// Another replica was seen alive at `now_ms` (a heartbeat or an announcement); it counts
    /// for `dead_after`.
    pub fn saw_others(&self, now_ms: i64, dead_after: Duration) {
        let until =
            now_ms.saturating_add(i64::try_from(dead_after.as_millis()).unwrap_or(i64::MAX));
        self.others_until_ms.fetch_max(until, Ordering::SeqCst);
    }

    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
    }

    /// No other replica can be serving at `now_ms`: emits may stay on this replica.
    pub fn alone(&self, now_ms: i64) -> bool {
        self.listening.load(Ordering::SeqCst)
            && now_ms > self.others_until_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_only_while_listening_and_no_other_was_seen_lately() {
        let p = Peers::default();
        let gap = Duration::from_secs(6);
        assert!(!p.alone(1_000), "not before its LISTEN is up");
        p.set_listening(true);
        assert!(p.alone(1_000));
        p.saw_others(1_000, gap);
        assert!(!p.alone(1_000));
        assert!(!p.alone(7_000), "another counts for the whole window");
        assert!(p.alone(7_001));
        // An older sighting never shortens a newer one.
        p.saw_others(10_000, gap);
        p.saw_others(2_000, gap);
        assert!(!p.alone(15_000));
        p.set_listening(false);
        assert!(!p.alone(100_000), "a lost LISTEN means: publish every emit");
    }
}

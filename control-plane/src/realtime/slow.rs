//! Clients that do not read. Each socket queues at most `SOCKET_BUFFER` packets; socketioxide
//! never waits for a socket (an emit to a full queue fails for that socket alone, to a room as
//! to one socket, here or from another replica), so a client that stops reading never slows the
//! others. But it would keep its queue, miss events without knowing, and hold its TCP connection
//! until the engine.io heartbeat notices (up to the ping interval and timeout, 30 s) — and
//! socketioxide cannot close a socket whose queue is full (closing queues a packet). So each
//! replica checks its sockets every [`CHECK_EVERY`]; one found full [`STRIKES`] times in a row
//! is dropped: its connection is cut under the engine (`crate::connections`), its disconnect
//! handler runs as for any lost client, and it is counted (`onda_realtime_slow_clients_total`).
//! A client that was only slow for a while reconnects and recovers what it missed.

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError};
use std::collections::HashMap;
use std::time::Duration;

/// How often a replica looks for sockets that do not read.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Checks in a row a socket's queue must be full to be dropped: a reading client drains a full
/// queue in far less than [`CHECK_EVERY`], so one still full at the next check is not reading.
pub const STRIKES: u8 = 2;

/// A payload that never encodes.
struct Probe;

impl Serialize for Probe {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "a probe of the queue, never sent",
        ))
    }
}

/// Whether the socket's queue is full. socketioxide offers no way to ask, but an emit takes its
/// slot in the queue before it encodes the payload: an emit of a payload that cannot be encoded
/// fails on a full queue with `InternalChannelFull`, otherwise on the encoding, and sends
/// nothing either way. (A test of the gateway fails if a socketioxide upgrade changes this.)
pub fn is_full<A: Adapter>(s: &SocketRef<A>) -> bool {
    matches!(
        s.emit("onda-probe", &Probe),
        Err(SendError::Socket(SocketError::InternalChannelFull))
    )
}

/// Sockets whose queue was full at the last checks.
#[derive(Debug, Default)]
pub struct Strikes {
    full: HashMap<Sid, u8>,
}

impl Strikes {
    /// Takes one check of every socket (its id, whether its queue is full); returns the sockets
    /// to drop. Sockets not in this check (gone) and those not full start again from zero.
    pub fn check(&mut self, sockets: impl IntoIterator<Item = (Sid, bool)>) -> Vec<Sid> {
        let mut next = HashMap::new();
        let mut drop = Vec::new();
        for (sid, full) in sockets {
            if !full {
                continue;
            }
            let n = self.full.get(&sid).copied().unwrap_or(0) + 1;
            if n >= STRIKES {
                drop.push(sid);
            } else {
                next.insert(sid, n);
            }
        }
        self.full = next;
        drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_queue_full_at_consecutive_checks_is_dropped() {
        let (a, b, c) = (Sid::new(), Sid::new(), Sid::new());
        let mut s = Strikes::default();
        assert!(s.check([(a, true), (b, true), (c, false)]).is_empty());
        // a stays full; b drained in between; c fills.
        assert_eq!(s.check([(a, true), (b, false), (c, true)]), [a]);
        // b full again starts from one strike; c's second strike drops it.
        assert_eq!(s.check([(b, true), (c, true)]), [c]);
        // A socket that went away is forgotten.
        assert!(s.check([]).is_empty());
        assert!(s.check([(b, true)]).is_empty());
    }
}

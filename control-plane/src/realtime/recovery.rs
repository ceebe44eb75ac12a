//! Connection state recovery: a client that reconnects after a short disconnect gets, in order
//! and once, the events it missed, and is told whether that was all of them.
//!
//! socketioxide 0.18 has none (its CONNECT packet carries only `{ sid }`, so socket.io-client's
//! own `pid`/`offset` recovery is never engaged), and socket.io's own keeps the missed packets in
//! the memory of the one server the client was on, which does not hold over replicas or
//! restarts. Here the database is the truth:
//!
//! - Every durable event the gateway sends a user (`receive-message`, `messages-read`,
//!   `message-edited`, `message-deleted`, `notification`) is appended to that user's feed
//!   (`db::realtime_feed`) **in the transaction of the change**, and sent with its offset as a
//!   last, extra argument, as socket.io does: `socket.on("receive-message", (m, offset) => …)`.
//!   The acting socket, which gets an ack instead of the event, finds the offset in the ack.
//! - A reconnecting client puts the newest offset it saw in its handshake
//!   (`auth: (cb) => cb({ token, offset })`); the server replays the user's events after it,
//!   then sends `recovery` `{ recovered, offset, replayed, reason? }`. `recovered: false` (no
//!   offset, an offset this server did not give that user, or events older than [`WINDOW`]
//!   missed) means: reload through REST, then go on from `offset`, the user's newest.
//! - Each offset reaches a socket once, also when events commit while it reconnects: the
//!   plan is read with the user's feed row locked ([`Plan::read`] with `lock`), and under that
//!   lock the socket joins the [`skip_room`] of each event it is replayed, which every live copy
//!   of that event passes by, and then its user's room. Events up to the plan's head come only
//!   replayed; later ones commit after the lock is released, so they come only live, and after
//!   the replay queued under the lock.
//!
//! Why a per-user log with a counter rather than the tables' time-sortable ids
//! (`secrets::new_time_id`): an id is drawn before its transaction commits, so a message with an
//! older id can commit after one with a newer id that a client already saw, and a resume "after
//! id X" would skip it; clocks of replicas differ too. The feed's counter row is locked from
//! the append to the commit, so a user's offsets commit in order, dense (1, 2, 3, …), on every
//! replica. And one log answers for every kind of event (an edit or a read mark has no row of
//! its own to sort by). The log keeps an event only for the window; its cost is one small row
//! per event and receiver.
//!
//! Typing indicators and presence (`typing-*`, `user-online`, `user-offline`) are ephemeral and
//! not replayed: a replayed "is typing" is wrong by the time it arrives, and presence is
//! current in `GET /v1/me/conversations`.
//!
//! Pure but for [`record`] (one append per event) and [`Plan::read`] (the reads at reconnect):
//! what to replay is decided by [`decide`], tested without a database.

use super::user_room;
use crate::db::realtime_feed::{self, Head, StoredEvent};
use crate::db::{self, Conn};
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use std::fmt;
use std::time::Duration;

/// How old a missed event may be for the recovery to be complete (socket.io's default
/// `maxDisconnectionDuration`); older events are pruned from the log.
pub const WINDOW: Duration = Duration::from_secs(120);

/// The most events one reconnect replays; a client that missed more reloads through REST.
pub const MAX_REPLAY: usize = 1000;

/// The event that ends a replay (or tells a new connection where its user's feed is).
pub const RECOVERY: &str = "recovery";

/// A position in a user's feed: `{epoch}-{seq}`, the sequence zero-padded to 12 digits so
/// offsets of one user compare as strings in their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offset {
    pub epoch: String,
    pub seq: i64,
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:012}", self.epoch, self.seq)
    }
}

impl Offset {
    /// Reads an offset a client sent back; None for anything this server does not write.
    pub fn parse(text: &str) -> Option<Offset> {
        let (epoch, seq) = text.rsplit_once('-')?;
        if epoch.is_empty() || seq.len() != 12 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Offset {
            epoch: epoch.to_string(),
            seq: seq.parse().ok()?,
        })
    }

    fn of(head: &Head) -> Offset {
        Offset {
            epoch: head.epoch.clone(),
            seq: head.seq,
        }
    }
}

/// A new feed's epoch.
fn new_epoch() -> String {
    crate::secrets::new_id("f")
}

/// An event for one user, to store with the change it tells.
#[derive(Debug, Clone)]
pub struct Entry {
    pub user_id: String,
    pub event: &'static str,
    pub payload: Value,
}

impl Entry {
    pub fn new(user_id: &str, event: &'static str, payload: Value) -> Entry {
        Entry {
            user_id: user_id.to_string(),
            event,
            payload,
        }
    }
}

/// An event stored in its user's feed, to send after the commit.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub user_id: String,
    pub event: &'static str,
    pub payload: Value,
    pub offset: Offset,
}

/// Appends `entries` to their users' feeds in the caller's transaction; the offsets come back
/// in the order of `entries`.
pub async fn record(
    tx: &mut Conn,
    tenant_id: &str,
    entries: Vec<Entry>,
) -> Result<Vec<Recorded>, sqlx::Error> {
    let events: Vec<realtime_feed::NewEvent<'_>> = entries
        .iter()
        .map(|e| realtime_feed::NewEvent {
            user_id: &e.user_id,
            event: e.event,
            payload: e.payload.to_string(),
        })
        .collect();
    let heads = realtime_feed::append(tx, tenant_id, new_epoch, &events, db::now_millis()).await?;
    drop(events);
    Ok(entries
        .into_iter()
        .zip(heads)
        .map(|(e, head)| Recorded {
            user_id: e.user_id,
            event: e.event,
            payload: e.payload,
            offset: Offset::of(&head),
        })
        .collect())
}

impl Recorded {
    /// The event's arguments on the wire: its payload, then its offset.
    pub fn args(&self) -> (&Value, String) {
        (&self.payload, self.offset.to_string())
    }
}

impl Recorded {
    /// The room of the user's sockets that were replayed this event: its live copy skips them
    /// (see [`skip_room`]).
    pub fn skip_room(&self, tenant_id: &str) -> String {
        skip_room(tenant_id, &self.user_id, &self.offset)
    }
}

/// The room a reconnecting socket joins for each event it is replayed, before it joins its
/// user's room: every live copy of an event is sent to the user's room except this event's
/// skip room, so the socket gets each offset once, replayed or live. (socketioxide sends a room's
/// packets straight into each socket's queue, with no hook to filter them per socket; rooms are
/// the filter it has.) A `#` never occurs in a user id, so no skip room is a user's room.
pub fn skip_room(tenant_id: &str, user_id: &str, offset: &Offset) -> String {
    format!("{}#{offset}", user_room(tenant_id, user_id))
}

/// Sends committed events to every device of their users, on every replica, but the acting
/// socket `s` (it has the ack, which carries its own offset) and the sockets that were replayed
/// them.
pub(crate) async fn send<A: Adapter>(
    hub: &super::Hub,
    s: &SocketRef<A>,
    tenant_id: &str,
    recorded: &[Recorded],
) {
    for r in recorded {
        let room = user_room(tenant_id, &r.user_id);
        let to = s.to(room).except(r.skip_room(tenant_id));
        if let Err(e) = hub.scoped(to).emit(r.event, &r.args()).await {
            tracing::debug!(error = %e, "{} not delivered to every socket", r.event);
        }
    }
}

/// The offset of the acting user's own copy of an event, for its ack.
pub fn own_offset(recorded: &[Recorded], user_id: &str) -> Option<String> {
    recorded
        .iter()
        .rev()
        .find(|r| r.user_id == user_id)
        .map(|r| r.offset.to_string())
}

/// Where a connecting socket's recovery stands: what to replay and what to tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The user's newest offset when the plan was read.
    pub head: Offset,
    /// Events to send, oldest first, each with its offset.
    pub replay: Vec<(String, Value, Offset)>,
    /// Why the recovery is not complete; None when it is.
    pub incomplete: Option<&'static str>,
}

impl Plan {
    /// Reads what a socket of the user that last saw `asked` (its handshake's `auth.offset`)
    /// missed. With `lock`, the user's feed row stays locked until `conn`'s transaction ends:
    /// no event of the user commits meanwhile, so every event after the plan's head commits,
    /// and is sent live, after whatever the caller did while holding it.
    pub async fn read(
        conn: &mut Conn,
        tenant_id: &str,
        user_id: &str,
        asked: Option<&Value>,
        lock: bool,
    ) -> Result<Plan, sqlx::Error> {
        let head = realtime_feed::head(conn, tenant_id, user_id, &new_epoch(), lock).await?;
        let wanted = asked.map(|v| v.as_str().and_then(Offset::parse));
        let missed = match &wanted {
            Some(Some(o)) if o.epoch == head.epoch && o.seq < head.seq => {
                let limit = i64::try_from(MAX_REPLAY).unwrap_or(i64::MAX) + 1;
                realtime_feed::since(conn, tenant_id, user_id, o.seq, limit).await?
            }
            _ => Vec::new(),
        };
        Ok(decide(wanted, &head, missed, db::now_millis()))
    }

    /// The `recovery` event that ends the replay; `offset` is the newest the client now has.
    pub fn status(&self, replayed: usize, newest: &Offset) -> Value {
        let mut v = json!({
            "recovered": self.incomplete.is_none(),
            "offset": newest.to_string(),
            "replayed": replayed,
        });
        if let Some(reason) = self.incomplete {
            v["reason"] = json!(reason);
        }
        v
    }
}

fn to_replay(epoch: &str, e: StoredEvent) -> Option<(String, Value, Offset)> {
    // A payload is written by this module from a JSON value; one that does not read back is
    // skipped rather than sent as something else.
    let payload = serde_json::from_str(&e.payload)
        .inspect_err(|err| tracing::error!(error = %err, seq = e.seq, "realtime: a stored event"))
        .ok()?;
    Some((
        e.event,
        payload,
        Offset {
            epoch: epoch.to_string(),
            seq: e.seq,
        },
    ))
}

/// Why a recovery is not complete, as the `reason` of `recovery`.
pub const NO_OFFSET: &str = "No offset in the handshake: load the state through REST.";
pub const UNKNOWN: &str =
    "The offset is not one this server gave this user: load the state through REST.";
pub const EXPIRED: &str =
    "Events older than the recovery window were missed: load the state through REST.";
pub const TOO_MANY: &str = "Too many events were missed: load the state through REST.";

/// What to replay to a socket that asked for `wanted` (None: it asked for nothing; Some(None):
/// it sent something that is not an offset), given the user's `head` and the stored events
/// after the offset (`missed`, oldest first, at most [`MAX_REPLAY`] + 1).
pub fn decide(
    wanted: Option<Option<Offset>>,
    head: &Head,
    missed: Vec<StoredEvent>,
    now_ms: i64,
) -> Plan {
    let head_offset = Offset::of(head);
    let refuse = |why| Plan {
        head: head_offset.clone(),
        replay: Vec::new(),
        incomplete: Some(why),
    };
    let asked = match wanted {
        None => return refuse(NO_OFFSET),
        Some(None) => return refuse(UNKNOWN),
        Some(Some(o)) => o,
    };
    if asked.epoch != head.epoch || asked.seq > head.seq || asked.seq < 0 {
        return refuse(UNKNOWN);
    }
    if asked.seq == head.seq {
        return Plan {
            head: head_offset,
            replay: Vec::new(),
            incomplete: None,
        };
    }
    let window_ms = i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX);
    // The first missed event must still be stored (not pruned) and young enough; the rest are
    // younger and dense after it.
    match missed.first() {
        Some(first) if first.seq == asked.seq + 1 && first.created_ms >= now_ms - window_ms => {}
        _ => return refuse(EXPIRED),
    }
    if missed.len() > MAX_REPLAY {
        return refuse(TOO_MANY);
    }
    Plan {
        replay: missed
            .into_iter()
            .filter_map(|e| to_replay(&head.epoch, e))
            .collect(),
        head: head_offset,
        incomplete: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: i64, created_ms: i64) -> StoredEvent {
        StoredEvent {
            seq,
            event: "receive-message".to_string(),
            payload: format!(r#"{{"n":{seq}}}"#),
            created_ms,
        }
    }

    fn head(seq: i64) -> Head {
        Head {
            epoch: "f_abc".to_string(),
            seq,
        }
    }

    fn at(seq: i64) -> Option<Option<Offset>> {
        Some(Some(Offset {
            epoch: "f_abc".to_string(),
            seq,
        }))
    }

    #[test]
    fn offsets_read_back_and_sort_as_text() {
        let o = Offset {
            epoch: "f_x1".to_string(),
            seq: 42,
        };
        assert_eq!(o.to_string(), "f_x1-000000000042");
        assert_eq!(Offset::parse(&o.to_string()), Some(o));
        assert!("f_x1-000000000009" < "f_x1-000000000010");
        for bad in [
            "",
            "42",
            "f_x1-42",
            "-000000000042",
            "f_x1-00000000004x",
            "f_x1-+00000000042",
        ] {
            assert_eq!(Offset::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_short_disconnect_replays_what_came_after_in_order() {
        let now = 1_000_000;
        let p = decide(
            at(3),
            &head(5),
            vec![stored(4, now - 500), stored(5, now)],
            now,
        );
        assert_eq!(p.incomplete, None);
        let seqs: Vec<i64> = p.replay.iter().map(|(_, _, o)| o.seq).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(p.replay[0].1, json!({"n": 4}));
        assert_eq!(p.status(2, &p.head)["recovered"], true);
        // Nothing missed is a complete recovery, however long ago.
        let p = decide(at(5), &head(5), vec![], now);
        assert_eq!((p.incomplete, p.replay.len()), (None, 0));
    }

    #[test]
    fn old_unknown_or_foreign_offsets_are_incomplete() {
        let now = 10_000_000;
        let window = i64::try_from(WINDOW.as_millis()).expect("ms");
        // The first missed event is older than the window.
        let p = decide(at(3), &head(4), vec![stored(4, now - window - 1)], now);
        assert_eq!(p.incomplete, Some(EXPIRED));
        assert!(p.replay.is_empty());
        // The first missed event was pruned: only later ones are stored.
        let p = decide(at(3), &head(6), vec![stored(5, now), stored(6, now)], now);
        assert_eq!(p.incomplete, Some(EXPIRED));
        // Ahead of the head, another epoch (another user, or one re-created), or not an offset.
        assert_eq!(
            decide(at(9), &head(4), vec![], now).incomplete,
            Some(UNKNOWN)
        );
        let other = Some(Some(Offset {
            epoch: "f_zzz".to_string(),
            seq: 1,
        }));
        assert_eq!(
            decide(other, &head(4), vec![], now).incomplete,
            Some(UNKNOWN)
        );
        assert_eq!(
            decide(Some(None), &head(4), vec![], now).incomplete,
            Some(UNKNOWN)
        );
        let p = decide(None, &head(4), vec![], now);
        assert_eq!(p.incomplete, Some(NO_OFFSET));
        let status = p.status(0, &p.head);
        assert_eq!(status["recovered"], false);
        assert_eq!(status["offset"], "f_abc-000000000004");
        assert!(
            status["reason"]
                .as_str()
                .is_some_and(|r| r.contains("REST"))
        );
    }

    #[test]
    fn too_many_missed_events_are_incomplete() {
        let now = 1_000_000;
        let missed = (1..=i64::try_from(MAX_REPLAY).expect("fits") + 1)
            .map(|s| stored(s, now))
            .collect();
        let p = decide(at(0), &head(5000), missed, now);
        assert_eq!(p.incomplete, Some(TOO_MANY));
    }
}

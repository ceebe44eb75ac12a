//! Connection time on this replica, per tenant and UTC day: the gateway opens an entry when a
//! socket is admitted and closes it when the socket goes; the flush loop takes what accrued
//! (open sockets up to now included) and adds it to `realtime_usage`. Pure over the times it is
//! given, so it is tested without a clock.
//!
//! Closing is the one place a socket's end is decided: `close` answers true once per socket, so
//! the disconnect handler and the reaper of sockets that never reached the namespace cannot
//! both count the same socket gone.

use crate::billing::DAY_MS;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;

/// Connection milliseconds by (tenant, first millisecond of the UTC day).
pub type Batch = BTreeMap<(String, i64), u64>;

#[derive(Debug, Clone)]
struct Open {
    tenant_id: String,
    user_id: String,
    /// When the socket was admitted.
    opened_ms: i64,
    /// Up to when its time is in `pending` (or was taken).
    since_ms: i64,
}

#[derive(Debug)]
struct State<K> {
    open: HashMap<K, Open>,
    pending: Batch,
}

#[derive(Debug)]
pub struct Meter<K> {
    state: Mutex<State<K>>,
}

impl<K> Default for Meter<K> {
    fn default() -> Self {
        Meter {
            state: Mutex::new(State {
                open: HashMap::new(),
                pending: Batch::new(),
            }),
        }
    }
}

/// Adds `[from, to)` to the tenant's days it spans (a socket connected over midnight counts on
/// both days). A clock that stepped back adds nothing.
fn accrue(pending: &mut Batch, tenant_id: &str, mut from: i64, to: i64) {
    while from < to {
        let day = from - from.rem_euclid(DAY_MS);
        let end = to.min(day + DAY_MS);
        let ms = u64::try_from(end - from).unwrap_or(0);
        *pending.entry((tenant_id.to_string(), day)).or_insert(0) += ms;
        from = end;
    }
}

impl<K: Hash + Eq + Clone> Meter<K> {
    /// A socket of the tenant's user was admitted at `now_ms`.
    pub fn open(&self, key: K, tenant_id: &str, user_id: &str, now_ms: i64) {
        let mut s = onda_shared::sync::lock(&self.state);
        s.open.insert(
            key,
            Open {
                tenant_id: tenant_id.to_string(),
                user_id: user_id.to_string(),
                opened_ms: now_ms,
                since_ms: now_ms,
            },
        );
    }

    /// The socket went at `now_ms`: its time accrues, and its (tenant, user) is returned, once;
    /// None when it was not open (closed already).
    pub fn close(&self, key: &K, now_ms: i64) -> Option<(String, String)> {
        let mut s = onda_shared::sync::lock(&self.state);
        let o = s.open.remove(key)?;
        accrue(&mut s.pending, &o.tenant_id, o.since_ms, now_ms);
        Some((o.tenant_id, o.user_id))
    }

    /// What accrued until `now_ms`, open sockets included, leaving nothing pending.
    pub fn take(&self, now_ms: i64) -> Batch {
        let mut s = onda_shared::sync::lock(&self.state);
        let State { open, pending } = &mut *s;
        for o in open.values_mut() {
            if now_ms > o.since_ms {
                accrue(pending, &o.tenant_id, o.since_ms, now_ms);
                o.since_ms = now_ms;
            }
        }
        std::mem::take(pending)
    }

    /// A batch that could not be written goes back, to be written with the next one.
    pub fn put_back(&self, batch: Batch) {
        let mut s = onda_shared::sync::lock(&self.state);
        for (k, ms) in batch {
            *s.pending.entry(k).or_insert(0) += ms;
        }
    }

    /// Sockets admitted before `before_ms` that are still open, by key.
    pub fn opened_before(&self, before_ms: i64) -> Vec<K> {
        let s = onda_shared::sync::lock(&self.state);
        s.open
            .iter()
            .filter(|(_, o)| o.opened_ms < before_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

    #[test]
    fn connection_time_accrues_per_tenant_and_day() {
        let m = Meter::default();
        m.open(1, "t1", "ana", T0 + 1_000);
        m.open(2, "t1", "bo", T0 + 2_000);
        m.open(3, "t2", "cy", T0 + 2_000);
        assert_eq!(m.close(&3, T0 + 2_500), Some(("t2".into(), "cy".into())));
        assert_eq!(m.close(&3, T0 + 9_000), None, "closed once");
        let first = m.take(T0 + 10_000);
        assert_eq!(
            first,
            Batch::from([(("t1".into(), T0), 9_000 + 8_000), (("t2".into(), T0), 500)])
        );
        // Open sockets go on from where the last take left them.
        assert_eq!(m.close(&1, T0 + 11_000), Some(("t1".into(), "ana".into())));
        assert_eq!(
            m.take(T0 + 12_000),
            Batch::from([(("t1".into(), T0), 1_000 + 2_000)])
        );
        assert!(m.take(T0 + 12_000).is_empty());
        // A batch that failed to write is kept for the next.
        m.put_back(Batch::from([(("t1".into(), T0), 5)]));
        assert_eq!(m.take(T0 + 12_001), Batch::from([(("t1".into(), T0), 6)]));
    }

    #[test]
    fn a_connection_over_midnight_counts_on_both_days_and_a_clock_step_back_adds_nothing() {
        let m = Meter::default();
        m.open("s", "t", "u", T0 + DAY_MS - 1_500);
        assert_eq!(
            m.take(T0 + 2 * DAY_MS + 700),
            Batch::from([
                (("t".into(), T0), 1_500),
                (("t".into(), T0 + DAY_MS), DAY_MS as u64),
                (("t".into(), T0 + 2 * DAY_MS), 700),
            ])
        );
        assert!(m.take(T0).is_empty(), "the clock stepped back");
        assert_eq!(m.opened_before(T0 + DAY_MS), ["s"]);
        assert!(m.opened_before(T0).is_empty());
        assert!(m.close(&"s", T0 + 2 * DAY_MS + 700).is_some());
        assert!(m.take(T0 + 3 * DAY_MS).is_empty());
    }
}

//! Listener usage for metering, and listener limits shared by several mounts.
//!
//! Usage is kept per mount path in a [`UsageCell`] that outlives the mount itself, so a listener
//! that leaves after its mount was removed (or replaced) still adds its time. [`take`] hands out
//! what accrued since the previous call and starts the next interval: every listener-nanosecond
//! lands in exactly one interval (open listeners are counted up to the instant of the take and
//! from there on in the next one), and the sub-millisecond remainder is carried over, not
//! dropped. Relay pulls between edges are not listeners and are not counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Usage of one mount since the previous [`take`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountUsage {
    /// The edge path.
    pub path: String,
    /// Listener time summed over listeners, in milliseconds.
    pub listener_ms: u64,
    /// Most listeners at once.
    pub peak_listeners: u64,
    /// Listeners admitted.
    pub sessions: u64,
    /// Audio bytes written to listeners.
    pub bytes_sent: u64,
}

impl MountUsage {
    pub fn is_empty(&self) -> bool {
        self.listener_ms == 0
            && self.sessions == 0
            && self.bytes_sent == 0
            && self.peak_listeners == 0
    }
}

#[derive(Debug, Default)]
struct Acc {
    /// Time of listeners that left (or were counted at a take) and not yet handed out.
    closed: Duration,
    sessions: u64,
    /// Listeners now.
    current: u64,
    /// Most at once since the last take.
    peak: u64,
}

/// One mount path's usage accumulator.
#[derive(Debug, Default)]
pub(crate) struct UsageCell {
    acc: Mutex<Acc>,
    bytes: AtomicU64,
}

impl UsageCell {
    pub(crate) fn admit(&self) {
        let mut a = lock(&self.acc);
        a.sessions += 1;
        a.current += 1;
        a.peak = a.peak.max(a.current);
    }

    pub(crate) fn leave(&self, listened: Duration) {
        let mut a = lock(&self.acc);
        a.current = a.current.saturating_sub(1);
        a.closed += listened;
    }

    /// Listeners connected now (relay pulls are never admitted into a cell).
    pub(crate) fn current(&self) -> u64 {
        lock(&self.acc).current
    }

    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Hands out what accrued, `open` being the time of listeners still connected since they
    /// were last counted (the caller restarts their clocks at the same instant).
    pub(crate) fn take(&self, path: &str, open: Duration) -> MountUsage {
        let mut a = lock(&self.acc);
        let total = a.closed + open;
        let ms = total.as_millis();
        // Keep the remainder below a millisecond for the next interval.
        a.closed =
            total.saturating_sub(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)));
        let usage = MountUsage {
            path: path.to_string(),
            listener_ms: u64::try_from(ms).unwrap_or(u64::MAX),
            peak_listeners: a.peak,
            sessions: std::mem::take(&mut a.sessions),
            bytes_sent: self.bytes.swap(0, Ordering::Relaxed),
        };
        a.peak = a.current;
        usage
    }

    /// Nothing accrued and nobody listening: the cell may go once no mount holds it.
    fn idle(&self) -> bool {
        let a = lock(&self.acc);
        a.current == 0
            && a.sessions == 0
            && a.closed.is_zero()
            && self.bytes.load(Ordering::Relaxed) == 0
    }
}

/// The usage cells of an edge, by mount path.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    cells: Mutex<HashMap<String, Arc<UsageCell>>>,
}

impl Usage {
    /// The cell of `path`, made on first use.
    pub(crate) fn cell(&self, path: &str) -> Arc<UsageCell> {
        lock(&self.cells)
            .entry(path.to_string())
            .or_default()
            .clone()
    }

    /// Every cell, for a take (the map's lock is not held while mounts are visited).
    pub(crate) fn cells(&self) -> Vec<(String, Arc<UsageCell>)> {
        lock(&self.cells)
            .iter()
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect()
    }

    /// Drops cells no mount uses any more and that have nothing left to hand out.
    pub(crate) fn prune(&self) {
        lock(&self.cells).retain(|_, c| Arc::strong_count(c) > 1 || !c.idle());
    }
}

/// A listener limit several mounts share.
#[derive(Debug)]
pub(crate) struct Group {
    max: AtomicU64,
    count: AtomicU64,
}

impl Group {
    pub(crate) fn new(max: u64) -> Group {
        Group {
            max: AtomicU64::new(max),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Release);
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Takes a place; false when the group is full. A lowered limit refuses newcomers and keeps
    /// everybody already in.
    pub(crate) fn try_acquire(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn release(&self) {
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Time since `since`, and `since` moved to `now`.
pub(crate) fn restart_clock(since: &mut Instant, now: Instant) -> Duration {
    let d = now.saturating_duration_since(*since);
    *since = now;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_split_time_without_loss() {
        let cell = UsageCell::default();
        cell.admit();
        cell.admit();
        cell.leave(Duration::from_micros(1_500_700));
        cell.add_bytes(1000);
        // One listener still on for 2.0004 s at the take.
        let u = cell.take("/a", Duration::from_micros(2_000_400));
        assert_eq!(u.listener_ms, 3501);
        assert_eq!((u.sessions, u.peak_listeners, u.bytes_sent), (2, 2, 1000));
        // 0.1 ms carried; the peak restarts at the listeners still on.
        let u = cell.take("/a", Duration::from_micros(999_900));
        assert_eq!(u.listener_ms, 1000);
        assert_eq!((u.sessions, u.peak_listeners, u.bytes_sent), (0, 1, 0));
        cell.leave(Duration::ZERO);
        assert!(cell.take("/a", Duration::ZERO).listener_ms == 0);
        assert!(cell.idle());
    }

    #[test]
    fn group_limit_holds_and_lowering_keeps_members() {
        let g = Group::new(2);
        assert!(g.try_acquire() && g.try_acquire());
        assert!(!g.try_acquire());
        g.set_max(1);
        assert_eq!(g.count(), 2);
        g.release();
        assert!(!g.try_acquire(), "still at the lowered limit");
        g.release();
        assert!(g.try_acquire());
        g.release();
        g.release();
        assert_eq!(g.count(), 0, "release never goes below zero");
    }
}

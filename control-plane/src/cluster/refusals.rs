//! What the control plane refuses nodes (and would-be nodes): failed joins, usage for stations a
//! node does not carry, media fetches its desired state does not name. Each refusal is counted
//! (`onda_node_refusals_total{kind}`) and logged as a WARN, but at most one line per kind and
//! interval, which names how many were left out meanwhile: a peer retrying in a loop cannot
//! flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The kinds of refusal, as the metric's label.
/// `usage` is a mount of a usage report refused, `usage_clamped` one whose amounts were cut to
/// what the node could have served; `turn_usage` and `turn_usage_clamped` the same of a tenant's
/// relayed TURN bytes.
pub const KINDS: &[&str] = &[
    "join",
    "usage",
    "usage_clamped",
    "turn_usage",
    "turn_usage_clamped",
    "media",
    "track",
];

pub struct RefusalLog {
    interval: Duration,
    counter: prometheus::IntCounterVec,
    /// Per kind: when a line was last written, and refusals not logged since.
    state: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RefusalLog {
    pub fn new(counter: prometheus::IntCounterVec, interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            counter,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one refusal of `kind` and logs `message` unless a line of that kind was written
    /// within the interval.
    pub fn refuse(&self, kind: &'static str, message: impl FnOnce() -> String) {
        self.counter.with_label_values(&[kind]).inc();
        let now = Instant::now();
        let suppressed = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match state.get_mut(kind) {
                Some((last, n)) if now.duration_since(*last) < self.interval => {
                    *n += 1;
                    return;
                }
                Some((last, n)) => {
                    *last = now;
                    std::mem::take(n)
                }
                None => {
                    state.insert(kind, (now, 0));
                    0
                }
            }
        };
        // Made only for a line that is written.
        let message = message();
        if suppressed == 0 {
            tracing::warn!(kind, "refused: {message}");
        } else {
            tracing::warn!(
                kind,
                suppressed,
                "refused: {message} ({suppressed} more {kind} refusal(s) in the last {} s were not logged)",
                self.interval.as_secs()
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn counter() -> prometheus::IntCounterVec {
        prometheus::IntCounterVec::new(prometheus::Opts::new("t_refusals_total", "t"), &["kind"])
            .unwrap()
    }

    #[test]
    fn counts_everything_and_logs_once_per_interval() {
        // An interval no test run outlasts: however the burst is scheduled, it is one line.
        let counter = counter();
        let log = RefusalLog::new(counter.clone(), Duration::from_secs(3600));
        let mut logged = 0;
        for _ in 0..20 {
            log.refuse("join", || {
                logged += 1;
                "x".to_string()
            });
        }
        assert_eq!(logged, 1, "one line for a burst");
        assert_eq!(counter.with_label_values(&["join"]).get(), 20);
        assert_eq!(log.state.lock().unwrap().get("join").map(|s| s.1), Some(19));
        // Kinds are limited apart.
        let mut other = 0;
        log.refuse("media", || {
            other += 1;
            "m".to_string()
        });
        assert_eq!(other, 1);
    }

    #[test]
    fn a_line_again_once_the_interval_has_passed() {
        let counter = counter();
        let log = RefusalLog::new(counter.clone(), Duration::from_millis(1));
        let mut logged = 0;
        log.refuse("join", || {
            logged += 1;
            "x".to_string()
        });
        // Sleeping at least the interval is what the test is about; a slow machine only
        // sleeps longer.
        std::thread::sleep(Duration::from_millis(5));
        log.refuse("join", || {
            logged += 1;
            "y".to_string()
        });
        assert_eq!(logged, 2, "a line again after the interval");
        assert_eq!(log.state.lock().unwrap().get("join").map(|s| s.1), Some(0));
        assert_eq!(counter.with_label_values(&["join"]).get(), 2);
    }
}

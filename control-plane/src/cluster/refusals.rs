//! What the control plane refuses nodes (and would-be nodes): failed joins, usage for stations a
//! node does not carry, media fetches its desired state does not name. Each refusal is counted
//! (`onda_node_refusals_total{kind}`) and logged as a WARN, but at most one line per kind and
//! interval, which names how many were left out meanwhile: a peer retrying in a loop cannot
//! flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The kinds of refusal, as the metric's label.
pub const KINDS: &[&str] = &["join", "usage", "media", "track"];

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

    #[test]
    fn counts_everything_and_logs_once_per_interval() {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("t_refusals_total", "t"),
            &["kind"],
        )
        .unwrap();
        let log = RefusalLog::new(counter.clone(), Duration::from_millis(50));
        let mut logged = 0;
        for _ in 0..20 {
            log.refuse("join", || {
                logged += 1;
                "x".to_string()
            });
        }
        assert_eq!(logged, 1, "one line for a burst");
        assert_eq!(counter.with_label_values(&["join"]).get(), 20);
        std::thread::sleep(Duration::from_millis(60));
        let mut second = 0;
        log.refuse("join", || {
            second += 1;
            "y".to_string()
        });
        assert_eq!(second, 1, "a line again after the interval");
        let state = log.state.lock().unwrap();
        assert_eq!(state.get("join").map(|s| s.1), Some(0));
    }
}

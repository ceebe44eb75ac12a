//! The timer of the control plane's periodic jobs (subscription renewals, stream sessions, the
//! sweep of unsent attachments): one tick every period, a late tick delayed rather than bunched
//! with the next, until the job's stop token is cancelled.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Ticker {
    tick: tokio::time::Interval,
    stop: CancellationToken,
}

impl Ticker {
    /// Ticks every `every` (the first at once) until `stop`.
    pub fn new(every: Duration, stop: CancellationToken) -> Ticker {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker { tick, stop }
    }

    /// Waits for the next tick: true then, false once stopped.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            _ = self.tick.tick() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_until_stopped() {
        let stop = CancellationToken::new();
        let mut t = Ticker::new(Duration::from_millis(1), stop.clone());
        assert!(t.next().await, "the first tick comes at once");
        assert!(t.next().await);
        stop.cancel();
        assert!(!t.next().await, "no tick once stopped");
    }
}

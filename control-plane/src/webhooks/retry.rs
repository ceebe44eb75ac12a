//! When a failed attempt is tried again: a fixed exponential-ish schedule scaled by the
//! configured first delay (10 s, 30 s, 2 min, 10 min, 30 min, then every hour by default),
//! until the event is older than the retry window; then the delivery fails.

use std::time::Duration;

/// Multiples of the first delay after the 1st, 2nd, … failed attempt; the last repeats.
const STEPS: [u32; 6] = [1, 3, 12, 60, 180, 360];

/// The delay after `failed` attempts (1 for the first failure).
pub fn delay(base: Duration, failed: u32) -> Duration {
    let i = (failed.max(1) as usize - 1).min(STEPS.len() - 1);
    base.saturating_mul(STEPS[i])
}

/// When to try again after `failed` attempts failed at `now_ms`, or None when that would be
/// past `created_ms + window` (the delivery fails).
pub fn next_attempt_ms(
    base: Duration,
    window: Duration,
    failed: u32,
    created_ms: i64,
    now_ms: i64,
) -> Option<i64> {
    let at = now_ms.saturating_add(millis(delay(base, failed)));
    (at <= created_ms.saturating_add(millis(window))).then_some(at)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_grows_then_stays_hourly_and_ends_after_the_window() {
        let base = Duration::from_secs(10);
        let secs: Vec<u64> = (1..=8).map(|n| delay(base, n).as_secs()).collect();
        assert_eq!(secs, [10, 30, 120, 600, 1800, 3600, 3600, 3600]);
        let day = Duration::from_secs(86_400);
        assert_eq!(next_attempt_ms(base, day, 1, 0, 5_000), Some(15_000));
        // Hourly retries stop once the next one would fall past 24 h after the event.
        let late = 86_400_000 - 1_000;
        assert_eq!(next_attempt_ms(base, day, 7, 0, late), None);
        assert_eq!(
            next_attempt_ms(base, day, 7, 0, 86_400_000 - 3_600_000),
            Some(86_400_000)
        );
        // Counting in total attempts: one day of the default schedule is about 27 attempts.
        let (mut now, mut n) = (0_i64, 1_u32);
        while let Some(at) = next_attempt_ms(base, day, n, 0, now) {
            now = at;
            n += 1;
        }
        assert!((25..=30).contains(&n), "{n} attempts in a day");
    }
}

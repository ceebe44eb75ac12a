//! What the control plane believes of a node's usage report. The node chooses the period and the
//! amounts, so each is bounded by what the node could have served: the period may be at most
//! [`MAX_USAGE_PERIOD_MS`] long (longer ones are cut to their last stretch of that length), must
//! end by now (give or take [`CLOCK_SLACK_MS`]) and not longer ago than [`MAX_REPORT_AGE_MS`];
//! each mount must belong to a station or live stream the node carried in the period and be one
//! of its mounts; its peak is at most the station's listener limit (the node's capacity when the
//! limit is unknown), and its listener time at most that peak over the period. What breaks a
//! rule is refused, what is too big is cut down; the rest is stored as sent.

use crate::db::carriage::{CLOCK_SLACK_MS, MAX_REPORT_AGE_MS};
use onda_shared::cluster::proto::{MAX_USAGE_PERIOD_MS, MountUsage, UsageReport};
use std::collections::{BTreeMap, BTreeSet};

/// The mount a live stream's viewers are reported under.
pub const STREAM_MOUNT: &str = "/hls";

/// The media an HLS viewer can fetch ahead of the clock: a joining player starts a few segments
/// behind the live edge (hls.js: three target durations) and may take more of the window at
/// once. Generous on purpose: it bounds an inflated report, it does not meter.
pub const STREAM_FETCH_AHEAD_MS: u64 = 10 * 60_000;

/// What is known of one station or live stream a report names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Its mounts; `None` when nothing is known of them (a deleted station), then any is taken.
    pub mounts: Option<BTreeSet<String>>,
    /// The most listeners the node can have had on it at once.
    pub max_listeners: u64,
    /// A live stream: its viewer time is the media time of segments served, which runs ahead
    /// of the clock when a player joins and fetches the playlist's window at once, so each
    /// viewer may add up to [`STREAM_FETCH_AHEAD_MS`] to the period.
    pub stream: bool,
}

/// A report after vetting: what is stored, and what was refused or cut down, with why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Vetted {
    pub period_start_ms: u64,
    pub kept: Vec<MountUsage>,
    pub refused: Vec<(MountUsage, String)>,
    pub clamped: Vec<(MountUsage, String)>,
}

/// The period the report's amounts are taken over, or why none of them is believed.
pub fn period(report: &UsageReport, now_ms: u64) -> Result<(u64, u64), String> {
    let (start, end) = (report.period_start_ms, report.period_end_ms);
    if end < start {
        return Err(format!("its period [{start}, {end}) ends before it starts"));
    }
    if end > now_ms.saturating_add(CLOCK_SLACK_MS) {
        return Err(format!(
            "its period ends at {end}, later than now ({now_ms}) and the clock allowance"
        ));
    }
    if end.saturating_add(MAX_REPORT_AGE_MS) < now_ms {
        return Err(format!(
            "its period ended at {end}, more than {} days ago",
            MAX_REPORT_AGE_MS / 86_400_000
        ));
    }
    Ok((start.max(end.saturating_sub(MAX_USAGE_PERIOD_MS)), end))
}

/// Vets each mount of `report` over `window` (from [`period`]): `carried` names what the node
/// carried in it, `subjects` what is known of each.
pub fn mounts(
    report: &UsageReport,
    window: (u64, u64),
    carried: &BTreeSet<String>,
    subjects: &BTreeMap<String, Subject>,
) -> Vetted {
    let mut out = Vetted {
        period_start_ms: window.0,
        ..Vetted::default()
    };
    let len = window.1 - window.0;
    for m in &report.mounts {
        if !carried.contains(&m.station_id) {
            out.refused
                .push((m.clone(), "not carried by the node in that period".into()));
            continue;
        }
        let Some(s) = subjects.get(&m.station_id) else {
            out.refused
                .push((m.clone(), "nothing is known of it".into()));
            continue;
        };
        if s.mounts.as_ref().is_some_and(|ms| !ms.contains(&m.mount)) {
            out.refused
                .push((m.clone(), "not one of its mounts".into()));
            continue;
        }
        let mut kept = m.clone();
        kept.peak_listeners = m.peak_listeners.min(s.max_listeners);
        // The edge measures listener time on its own clock between takes: a second of jitter
        // per listener is allowed.
        let per_listener = if s.stream {
            len.saturating_add(STREAM_FETCH_AHEAD_MS)
        } else {
            len.saturating_add(1_000)
        };
        kept.listener_ms = m
            .listener_ms
            .min(per_listener.saturating_mul(kept.peak_listeners));
        if kept != *m {
            out.clamped.push((
                m.clone(),
                format!(
                    "cut to peak {} and {} listener ms (period {len} ms, at most {} listeners)",
                    kept.peak_listeners, kept.listener_ms, s.max_listeners
                ),
            ));
        }
        out.kept.push(kept);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn usage(station: &str, mount: &str, listener_ms: u64, peak: u64) -> MountUsage {
        MountUsage {
            station_id: station.into(),
            mount: mount.into(),
            listener_ms,
            peak_listeners: peak,
            sessions: 1,
            bytes_sent: 1000,
        }
    }

    fn report(start: u64, end: u64, mounts: Vec<MountUsage>) -> UsageReport {
        UsageReport {
            seq: 1,
            period_start_ms: start,
            period_end_ms: end,
            mounts,
        }
    }

    #[test]
    fn periods_the_node_could_not_have_metered_are_refused_or_cut() {
        // The reproduction: [0, u64::MAX).
        assert!(period(&report(0, u64::MAX, vec![]), NOW).is_err());
        assert!(period(&report(NOW, NOW - 1, vec![]), NOW).is_err());
        assert!(period(&report(NOW, NOW + CLOCK_SLACK_MS + 1, vec![]), NOW).is_err());
        assert!(period(&report(0, NOW - MAX_REPORT_AGE_MS - 1, vec![]), NOW).is_err());
        // Normal ones stand; a long one keeps its last stretch.
        assert_eq!(
            period(&report(NOW - 10_000, NOW, vec![]), NOW),
            Ok((NOW - 10_000, NOW))
        );
        assert_eq!(
            period(&report(0, NOW, vec![]), NOW),
            Ok((NOW - MAX_USAGE_PERIOD_MS, NOW))
        );
    }

    #[test]
    fn viewers_fetching_ahead_are_kept_and_an_inflated_stream_is_cut() {
        let carried: BTreeSet<String> = ["l1"].map(String::from).into();
        let subjects: BTreeMap<String, Subject> = [(
            "l1".to_string(),
            Subject {
                mounts: Some([STREAM_MOUNT.to_string()].into()),
                max_listeners: 50,
                stream: true,
            },
        )]
        .into();
        // Two viewers joining in a 1 s report fetch 4 s of segments each (seen in a real run).
        let joining = usage("l1", STREAM_MOUNT, 8_000, 2);
        let inflated = usage("l1", STREAM_MOUNT, 360_000_000_000, 2);
        let r = report(NOW - 1_000, NOW, vec![joining.clone(), inflated]);
        let v = mounts(&r, (NOW - 1_000, NOW), &carried, &subjects);
        assert_eq!(v.kept[0], joining);
        assert_eq!(v.kept[1].listener_ms, 2 * (1_000 + STREAM_FETCH_AHEAD_MS));
        assert_eq!(v.clamped.len(), 1);
    }

    #[test]
    fn amounts_are_bounded_by_what_the_node_could_serve() {
        let carried: BTreeSet<String> = ["s1", "l1"].map(String::from).into();
        let subjects: BTreeMap<String, Subject> = [
            (
                "s1".to_string(),
                Subject {
                    mounts: Some(["/a.mp3".to_string()].into()),
                    max_listeners: 100,
                    stream: false,
                },
            ),
            (
                "l1".to_string(),
                Subject {
                    mounts: Some([STREAM_MOUNT.to_string()].into()),
                    max_listeners: 50,
                    stream: true,
                },
            ),
        ]
        .into();
        let normal = usage("s1", "/a.mp3", 9_990 * 3, 3);
        let stream = usage("l1", STREAM_MOUNT, 15_000, 1);
        let r = report(
            NOW - 10_000,
            NOW,
            vec![
                normal.clone(),
                stream.clone(),
                usage("s1", "/a.mp3", 360_000_000_000, 1_000_000),
                usage("s1", "/other.mp3", 1, 1),
                usage("s2", "/a.mp3", 1, 1),
            ],
        );
        let v = mounts(&r, (NOW - 10_000, NOW), &carried, &subjects);
        assert_eq!(v.period_start_ms, NOW - 10_000);
        assert_eq!(v.kept.len(), 3);
        // Normal usage stays exactly as sent.
        assert_eq!(v.kept[0], normal);
        assert_eq!(v.kept[1], stream);
        // The inflated one: peak at the station's limit, time at that peak over the period.
        assert_eq!(v.kept[2].peak_listeners, 100);
        assert_eq!(v.kept[2].listener_ms, 100 * 11_000);
        assert_eq!(v.clamped.len(), 1);
        let refused: Vec<&str> = v.refused.iter().map(|(m, _)| m.mount.as_str()).collect();
        assert_eq!(refused, ["/other.mp3", "/a.mp3"]);
        assert!(v.refused[1].1.contains("not carried"));
    }
}

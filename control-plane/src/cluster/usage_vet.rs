//! What the control plane believes of a node's usage report. The node chooses the period and the
//! amounts, so each is bounded by what the node could have served: the period may be at most
//! [`MAX_USAGE_PERIOD_MS`] long (longer ones are cut to their last stretch of that length), must
//! end by now (give or take [`CLOCK_SLACK_MS`]) and not longer ago than [`MAX_REPORT_AGE_MS`];
//! each mount must belong to a station or live stream the node carried in the period and be one
//! of its mounts; its peak is at most the station's listener limit (the node's capacity when the
//! limit is unknown), and its listener time at most that peak over the period (plus metering
//! jitter, or for a live viewer what it fetches ahead, both growing with the period); its bytes
//! at most what the listeners could have been sent over the period at
//! [`AUDIO_MAX_BYTES_PER_SEC`] (or [`STREAM_MAX_BYTES_PER_SEC`]) plus a burst per join; its
//! sessions (not billed) as sent. A node's periods of one station mount never count twice: the part of a period this
//! node already reported for that mount (under another sequence number) is taken out, and the
//! amounts shrink with it. What breaks a rule is refused, what is too big is cut down; the rest
//! is stored as sent.
//!
//! Relayed TURN bytes ([`turn`]) follow the same rules per tenant: only from a node that runs a
//! TURN relay, only for a tenant that exists or existed, at most [`TURN_MAX_BYTES_PER_SEC`] over
//! the period and [`TURN_LAG_MS`] before it (coturn logs a session's bytes every 4096 packets and
//! at its end, so a report may carry some from before its period), and a period the node
//! already reported for the tenant counts once.

use crate::db::carriage::{CLOCK_SLACK_MS, MAX_REPORT_AGE_MS};
use onda_shared::cluster::proto::{MAX_USAGE_PERIOD_MS, MountUsage, TurnUsage, UsageReport};
use std::collections::{BTreeMap, BTreeSet};

/// The mount a live stream's viewers are reported under.
pub const STREAM_MOUNT: &str = "/hls";

/// The media an HLS viewer can fetch ahead of the clock: a joining player starts a few segments
/// behind the live edge (hls.js: three target durations) and may take more of the window at
/// once. Generous on purpose: it bounds an inflated report, it does not meter.
pub const STREAM_FETCH_AHEAD_MS: u64 = 10 * 60_000;

/// The most an audio listener can be sent per second: 1 Mbit/s, three times the highest
/// bitrate the plans offer, with room for metadata.
pub const AUDIO_MAX_BYTES_PER_SEC: u64 = 1_000_000 / 8;

/// The most a live viewer can be sent per second of media: 50 Mbit/s.
pub const STREAM_MAX_BYTES_PER_SEC: u64 = 50_000_000 / 8;

/// How many times a report's period a joining listener may be sent ahead (an HLS viewer's
/// first segments, an audio listener's burst), at most.
pub const AHEAD: u64 = 30;

/// The jitter of an audio listener's metered time per report.
pub const JITTER_MS: u64 = 1_000;

/// The burst an audio listener gets on joining, at most: the edge's ceiling for
/// `limits.burst_bytes`.
pub const MAX_BURST_BYTES: u64 = 16 << 20;

/// The most a node's TURN relay is believed to relay per second for one tenant, received and
/// sent together: 20 Gbit/s, a 10 Gbit/s interface both ways. It bounds an inflated report; it
/// does not meter.
pub const TURN_MAX_BYTES_PER_SEC: u64 = 20_000_000_000 / 8;

/// How long before a report's period the relayed bytes it carries may have been relayed: a
/// quiet session logs its usage only every 4096 packets or at its end.
pub const TURN_LAG_MS: u64 = 10 * 60_000;

/// Periods of stored usage, by (station id, mount).
pub type Reported = BTreeMap<(String, String), Vec<(u64, u64)>>;

/// How much of `window` the `periods` cover.
fn covered(window: (u64, u64), periods: &[(u64, u64)]) -> u64 {
    let mut parts: Vec<(u64, u64)> = periods
        .iter()
        .map(|&(a, b)| (a.max(window.0), b.min(window.1)))
        .filter(|(a, b)| a < b)
        .collect();
    parts.sort_unstable();
    let (mut total, mut reach) = (0, window.0);
    for (a, b) in parts {
        let a = a.max(reach);
        if b > a {
            total += b - a;
            reach = b;
        }
    }
    total
}

/// `v` scaled by `num / den` (rounded down).
fn scale(v: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return v;
    }
    u64::try_from(u128::from(v) * u128::from(num) / u128::from(den)).unwrap_or(u64::MAX)
}

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

/// A report's TURN usage after vetting.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TurnVetted {
    pub kept: Vec<TurnUsage>,
    pub refused: Vec<(TurnUsage, String)>,
    pub clamped: Vec<(TurnUsage, String)>,
}

/// Vets each tenant's relayed bytes of `report` over `window` (from [`period`], or the reason
/// none is believed): `runs_turn` says whether the node runs a TURN relay, `tenants` which of the
/// named tenants exist or existed, `reported` the periods of the node's stored TURN usage of
/// each tenant that touch the window.
pub fn turn(
    report: &UsageReport,
    window: Result<(u64, u64), String>,
    runs_turn: bool,
    tenants: &BTreeSet<String>,
    reported: &BTreeMap<String, Vec<(u64, u64)>>,
) -> TurnVetted {
    let mut out = TurnVetted::default();
    for t in &report.turn {
        let refuse = |why: &str| (t.clone(), why.to_string());
        let window = match &window {
            Ok(w) => *w,
            Err(why) => {
                out.refused.push(refuse(why));
                continue;
            }
        };
        if !runs_turn {
            out.refused.push(refuse("the node runs no TURN relay"));
            continue;
        }
        if !tenants.contains(&t.tenant_id) {
            out.refused.push(refuse("no such tenant"));
            continue;
        }
        let len = window.1 - window.0;
        let periods = reported.get(&t.tenant_id).map_or(&[][..], Vec::as_slice);
        let fresh = len - covered(window, periods);
        let inside = |at: u64| periods.iter().any(|&(a, b)| a <= at && at < b);
        if (len > 0 && fresh == 0) || (len == 0 && inside(window.0)) {
            out.refused.push(refuse(
                "its period was already reported by another report of this node",
            ));
            continue;
        }
        let mut kept = t.clone();
        kept.relayed_bytes = scale(t.relayed_bytes, fresh, len).min(scale(
            fresh.saturating_add(TURN_LAG_MS),
            TURN_MAX_BYTES_PER_SEC,
            1_000,
        ));
        if kept != *t {
            out.clamped.push((
                t.clone(),
                format!(
                    "cut to {} bytes (period {len} ms of which {fresh} ms not reported before)",
                    kept.relayed_bytes
                ),
            ));
        }
        out.kept.push(kept);
    }
    out
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
/// carried in it, `subjects` what is known of each, `reported` the periods of the node's stored
/// usage of each mount that touch the window.
pub fn mounts(
    report: &UsageReport,
    window: (u64, u64),
    carried: &BTreeSet<String>,
    subjects: &BTreeMap<String, Subject>,
    reported: &Reported,
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
        let periods = reported
            .get(&(m.station_id.clone(), m.mount.clone()))
            .map_or(&[][..], Vec::as_slice);
        let fresh = len - covered(window, periods);
        let inside = |t: u64| periods.iter().any(|&(a, b)| a <= t && t < b);
        if (len > 0 && fresh == 0) || (len == 0 && inside(window.0)) {
            out.refused.push((
                m.clone(),
                "its period was already reported by another report of this node".into(),
            ));
            continue;
        }
        let mut kept = m.clone();
        // Only the part of the period not reported before counts, and the amounts with it.
        kept.listener_ms = scale(m.listener_ms, fresh, len);
        kept.sessions = scale(m.sessions, fresh, len);
        kept.bytes_sent = scale(m.bytes_sent, fresh, len);
        kept.peak_listeners = m.peak_listeners.min(s.max_listeners);
        // Sessions are not billed and are kept as sent (listeners churn faster than any bound
        // an honest node always meets); bursts are counted for at most one join per listener
        // slot and second, and the slots' own joins twice over.
        let joins = kept
            .sessions
            .min(kept.peak_listeners.saturating_mul(2 + fresh / 1_000));
        // What a listener may be sent beyond the period's length grows with the period, so
        // cutting a stretch into many short reports gains little: a viewer's fetch ahead and a
        // joining listener's burst are capped at AHEAD times the period.
        let ahead = fresh.saturating_mul(AHEAD);
        // Listener time is metered on the edge's clock between takes: up to a second of jitter
        // per listener (a tenth of a period shorter than 10 s).
        let metered = fresh
            .saturating_add(JITTER_MS.min(fresh / 10))
            .saturating_mul(kept.peak_listeners);
        let most = if s.stream {
            // A viewer's time is the media time of the segments it fetched: a player fetches a
            // whole segment at once, and a joining one several.
            metered.saturating_add(
                kept.peak_listeners
                    .saturating_mul(STREAM_FETCH_AHEAD_MS.min(ahead)),
            )
        } else {
            metered
        };
        kept.listener_ms = kept.listener_ms.min(most);
        let (rate, burst) = if s.stream {
            (STREAM_MAX_BYTES_PER_SEC, 0)
        } else {
            (
                AUDIO_MAX_BYTES_PER_SEC,
                MAX_BURST_BYTES.min(scale(ahead, AUDIO_MAX_BYTES_PER_SEC, 1_000)),
            )
        };
        // Bytes by what the listeners could have been sent over the period (not by the listener
        // time reported: an HLS viewer's playlists and first segments come before its media
        // time does).
        kept.bytes_sent = kept
            .bytes_sent
            .min(scale(most, rate, 1_000).saturating_add(joins.saturating_mul(burst)));
        if kept != *m {
            out.clamped.push((
                m.clone(),
                format!(
                    "cut to peak {}, {} listener ms, {} sessions and {} bytes (period {len} ms \
                     of which {fresh} ms not reported before, at most {} listeners)",
                    kept.peak_listeners,
                    kept.listener_ms,
                    kept.sessions,
                    kept.bytes_sent,
                    s.max_listeners
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
            turn: Vec::new(),
        }
    }

    fn relayed(tenant: &str, bytes: u64) -> TurnUsage {
        TurnUsage {
            tenant_id: tenant.into(),
            relayed_bytes: bytes,
        }
    }

    #[test]
    fn turn_bytes_of_a_turn_node_for_known_tenants_count_once_and_bounded() {
        let mut r = report(NOW - 10_000, NOW, vec![]);
        r.turn = vec![
            relayed("ten_a", 46_700),
            relayed("ten_gone", 1),
            relayed("ten_forged", 5),
            relayed("ten_b", u64::MAX),
        ];
        let window = Ok((NOW - 10_000, NOW));
        let tenants: BTreeSet<String> = ["ten_a", "ten_b", "ten_gone"].map(String::from).into();
        let none = BTreeMap::new();
        let v = turn(&r, window.clone(), true, &tenants, &none);
        assert_eq!(
            v.kept[..2],
            [relayed("ten_a", 46_700), relayed("ten_gone", 1)]
        );
        // At most 20 Gbit/s over the period and the lag before it.
        assert_eq!(
            v.kept[2],
            relayed(
                "ten_b",
                (10_000 + TURN_LAG_MS) / 1_000 * TURN_MAX_BYTES_PER_SEC
            )
        );
        assert_eq!(v.clamped.len(), 1);
        assert_eq!(
            v.refused,
            [(relayed("ten_forged", 5), "no such tenant".into())]
        );
        // A node without TURN, or a period not believed: nothing.
        let v = turn(&r, window.clone(), false, &tenants, &none);
        assert!(v.kept.is_empty() && v.refused.len() == 4);
        let v = turn(&r, Err("too old".into()), true, &tenants, &none);
        assert!(v.kept.is_empty() && v.refused[0].1 == "too old");
        // Half the period reported before for ten_a (another seq): half counts; all of it for
        // ten_gone: refused.
        let reported: BTreeMap<String, Vec<(u64, u64)>> = [
            ("ten_a".to_string(), vec![(NOW - 20_000, NOW - 5_000)]),
            ("ten_gone".to_string(), vec![(NOW - 10_000, NOW)]),
        ]
        .into();
        let v = turn(&r, window, true, &tenants, &reported);
        assert_eq!(v.kept[0], relayed("ten_a", 23_350));
        assert!(
            v.refused
                .iter()
                .any(|(t, why)| t.tenant_id == "ten_gone" && why.contains("already reported"))
        );
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
        // A viewer that fetched playlists but no media yet (seen in a real run).
        let playlists = MountUsage {
            bytes_sent: 40_000,
            ..usage("l1", STREAM_MOUNT, 0, 1)
        };
        let r = report(
            NOW - 1_000,
            NOW,
            vec![joining.clone(), inflated, playlists.clone()],
        );
        let v = mounts(
            &r,
            (NOW - 1_000, NOW),
            &carried,
            &subjects,
            &Reported::new(),
        );
        assert_eq!(v.kept[0], joining);
        // Two viewers over the second, each fetching up to 30 s ahead.
        assert_eq!(v.kept[1].listener_ms, 2 * (1_100 + AHEAD * 1_000));
        assert_eq!(v.kept[2], playlists);
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
        let v = mounts(
            &r,
            (NOW - 10_000, NOW),
            &carried,
            &subjects,
            &Reported::new(),
        );
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

    fn one_station() -> (BTreeSet<String>, BTreeMap<String, Subject>) {
        let carried: BTreeSet<String> = ["s1"].map(String::from).into();
        let subjects = [(
            "s1".to_string(),
            Subject {
                mounts: Some(["/a.mp3".to_string()].into()),
                max_listeners: 100,
                stream: false,
            },
        )]
        .into();
        (carried, subjects)
    }

    #[test]
    fn a_period_the_node_already_reported_counts_once() {
        let (carried, subjects) = one_station();
        let key = ("s1".to_string(), "/a.mp3".to_string());
        let sent = MountUsage {
            sessions: 10,
            bytes_sent: 1_000_000,
            ..usage("s1", "/a.mp3", 30_000, 3)
        };
        let r = report(NOW - 10_000, NOW, vec![sent.clone()]);
        let window = (NOW - 10_000, NOW);
        // Reported before in full, in two pieces, or by a period around it: refused.
        for stored in [
            vec![(NOW - 10_000, NOW)],
            vec![(NOW - 20_000, NOW - 4_000), (NOW - 5_000, NOW + 1)],
            vec![(0, u64::MAX)],
        ] {
            let v = mounts(
                &r,
                window,
                &carried,
                &subjects,
                &[(key.clone(), stored)].into(),
            );
            assert!(v.kept.is_empty());
            assert!(
                v.refused[0].1.contains("already reported"),
                "{:?}",
                v.refused
            );
        }
        // Its first 4 s reported before (in two overlapping reports): 6 s of 10 s count.
        let stored = vec![(NOW - 12_000, NOW - 7_000), (NOW - 8_000, NOW - 6_000)];
        let v = mounts(
            &r,
            window,
            &carried,
            &subjects,
            &[(key.clone(), stored)].into(),
        );
        assert_eq!(
            (
                v.kept[0].listener_ms,
                v.kept[0].sessions,
                v.kept[0].bytes_sent
            ),
            (18_000, 6, 600_000)
        );
        assert_eq!(v.kept[0].peak_listeners, 3);
        assert_eq!(v.clamped.len(), 1);
        // Periods that only touch it, or of another mount, take nothing away.
        let reported: Reported = [
            (
                key.clone(),
                vec![(NOW - 20_000, NOW - 10_000), (NOW, NOW + 5_000)],
            ),
            (("s1".to_string(), "/b.mp3".to_string()), vec![window]),
        ]
        .into();
        let v = mounts(&r, window, &carried, &subjects, &reported);
        assert_eq!(v.kept, [sent]);
        assert!(v.clamped.is_empty());
        // A report of an instant inside a reported period is refused, one at its end is not.
        let instant = report(
            NOW - 5_000,
            NOW - 5_000,
            vec![usage("s1", "/a.mp3", 900, 1)],
        );
        let stored: Reported = [(key.clone(), vec![window])].into();
        let v = mounts(
            &instant,
            (NOW - 5_000, NOW - 5_000),
            &carried,
            &subjects,
            &stored,
        );
        assert_eq!(v.refused.len(), 1);
        let v = mounts(&instant, (NOW, NOW), &carried, &subjects, &stored);
        assert_eq!(v.kept.len(), 1);
        // An instant carries no listener time and no bytes.
        assert_eq!((v.kept[0].listener_ms, v.kept[0].bytes_sent), (0, 0));
    }

    #[test]
    fn sessions_and_bytes_are_bounded_by_the_listener_time() {
        let (carried, subjects) = one_station();
        // Two listeners over 10 s at 320 kbit/s, each with a 64 KiB burst: as sent.
        let normal = MountUsage {
            sessions: 2,
            bytes_sent: 2 * 10 * 40_000 + 2 * 65_536,
            ..usage("s1", "/a.mp3", 20_000, 2)
        };
        let inflated = MountUsage {
            sessions: 1_000_000,
            bytes_sent: u64::MAX,
            ..usage("s1", "/a.mp3", 20_000, 2)
        };
        let r = report(NOW - 10_000, NOW, vec![normal.clone(), inflated]);
        let v = mounts(
            &r,
            (NOW - 10_000, NOW),
            &carried,
            &subjects,
            &Reported::new(),
        );
        assert_eq!(v.kept[0], normal);
        assert_eq!(v.kept[1].sessions, 1_000_000);
        assert_eq!(
            v.kept[1].bytes_sent,
            22 * AUDIO_MAX_BYTES_PER_SEC + 24 * MAX_BURST_BYTES
        );
        assert_eq!(v.clamped.len(), 1);
    }

    #[test]
    fn cutting_a_stretch_into_tiny_reports_gains_nothing() {
        let (carried, subjects) = one_station();
        let key = ("s1".to_string(), "/a.mp3".to_string());
        let mut reported = Reported::new();
        let mut total = 0;
        // A second of 10 listeners as 1,000 reports of a millisecond, each claiming an hour.
        for i in 0..1_000 {
            let window = (NOW - 1_000 + i, NOW - 1_000 + i + 1);
            let r = report(
                window.0,
                window.1,
                vec![usage("s1", "/a.mp3", 3_600_000, 10)],
            );
            let v = mounts(&r, window, &carried, &subjects, &reported);
            total += v.kept.iter().map(|m| m.listener_ms).sum::<u64>();
            reported.entry(key.clone()).or_default().push(window);
        }
        assert!(
            total <= 10 * 1_000,
            "{total} listener ms from 1 s of 10 listeners"
        );
    }
}

//! Song requests: the rules that decide whether a listener's request is taken, apart from I/O.
//!
//! A station that takes requests (its plan has the feature `requests`, its settings are on and
//! its AutoDJ runs) takes a track unless the track was played or requested within the
//! station's track gap, or its artist within the artist gap, or the listener's address already
//! made its limit of requests in the window ([`admit`], pure over what the database says and
//! the time). `api::requests` gathers the facts (`db::requests`), asks, and writes the request
//! in the same transaction. The queue of pending requests goes to the station's origin node in
//! its desired state (`cluster::round`), the AutoDJ plays them after the current track in
//! order, and the node's track report marks each one played (`cluster::channel`).
//!
//! Listeners are told apart by a hash of their address (an IPv6 client by its /64) under a key
//! the replicas agree on, so the database never holds addresses.

use hmac::{Hmac, Mac as _};
use onda_shared::api::RequestSettings;
use sha2::Sha256;
use std::net::IpAddr;

/// A play or a request of a track, as far as the gaps care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// The media file's content hash (a track is the same track in any of its media rows).
    pub sha256: String,
    pub artist: String,
    /// Unix ms: when it started playing, or was requested.
    pub at_ms: i64,
}

/// Why a request is refused: each answers a sentence and a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "This track was played or requested in the last {minutes} minutes; request another one."
    )]
    TrackGap { minutes: u32 },
    #[error(
        "A track by {artist} was played or requested in the last {minutes} minutes; request \
         another artist."
    )]
    ArtistGap { artist: String, minutes: u32 },
    #[error(
        "You made {limit} request(s) in the last {minutes} minutes, the most this station takes \
         from one listener; try again in {retry_after_secs} seconds."
    )]
    PerIp {
        limit: u32,
        minutes: u32,
        retry_after_secs: u32,
    },
    #[error(
        "This station already has {MAX_QUEUE} requests waiting, the most it queues; try again \
         once some have played."
    )]
    QueueFull,
}

const MINUTE_MS: i64 = 60_000;

impl Refusal {
    /// The `outcome` label values of `onda_song_requests_total`, "accepted" first.
    pub const OUTCOMES: [&'static str; 5] = [
        "accepted",
        "track_gap",
        "artist_gap",
        "per_ip",
        "queue_full",
    ];

    pub fn outcome(&self) -> &'static str {
        match self {
            Refusal::TrackGap { .. } => "track_gap",
            Refusal::ArtistGap { .. } => "artist_gap",
            Refusal::PerIp { .. } => "per_ip",
            Refusal::QueueFull => "queue_full",
        }
    }
}

/// Requests a station holds waiting at most: the queue travels in its origin's desired state,
/// so listeners from many addresses must not grow it without bound.
pub const MAX_QUEUE: u64 = 100;

/// What [`admit`] decides from: the station's plays and (not cleared) requests at least as far
/// back as the longer gap, the times of this listener's requests at least as far back as the
/// per-address window, and how many requests wait.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub recent: &'a [Recent],
    pub client: &'a [i64],
    pub queued: u64,
}

/// Whether the station takes a request of a track by `artist` with content `sha256` at `now_ms`.
pub fn admit(
    rules: &RequestSettings,
    (sha256, artist): (&str, &str),
    facts: Facts<'_>,
    now_ms: i64,
) -> Result<(), Refusal> {
    let Facts {
        recent,
        client,
        queued,
    } = facts;
    let within = |at: i64, minutes: u32| now_ms - at < i64::from(minutes) * MINUTE_MS;
    let minutes = rules.track_gap_minutes;
    if minutes > 0
        && recent
            .iter()
            .any(|r| r.sha256 == sha256 && within(r.at_ms, minutes))
    {
        return Err(Refusal::TrackGap { minutes });
    }
    let minutes = rules.artist_gap_minutes;
    let key = artist_key(artist);
    if minutes > 0
        && !key.is_empty()
        && recent
            .iter()
            .any(|r| artist_key(&r.artist) == key && within(r.at_ms, minutes))
    {
        return Err(Refusal::ArtistGap {
            artist: artist.trim().to_string(),
            minutes,
        });
    }
    let minutes = rules.per_ip_minutes;
    let window: Vec<i64> = client
        .iter()
        .copied()
        .filter(|&at| within(at, minutes))
        .collect();
    if window.len() >= rules.per_ip_limit as usize {
        // Room comes back when the oldest request in the window leaves it.
        let oldest = window.iter().copied().min().unwrap_or(now_ms);
        let free_at = oldest + i64::from(minutes) * MINUTE_MS;
        let secs = (free_at - now_ms + 999) / 1000;
        return Err(Refusal::PerIp {
            limit: rules.per_ip_limit,
            minutes,
            retry_after_secs: u32::try_from(secs.max(1)).unwrap_or(u32::MAX),
        });
    }
    if queued >= MAX_QUEUE {
        return Err(Refusal::QueueFull);
    }
    Ok(())
}

/// Artists compare without case and surrounding space ("The Band" is "the band ").
fn artist_key(artist: &str) -> String {
    artist.trim().to_lowercase()
}

/// How far back [`admit`] needs the station's plays and requests, in ms.
pub fn lookback_ms(rules: &RequestSettings) -> i64 {
    i64::from(rules.track_gap_minutes.max(rules.artist_gap_minutes)) * MINUTE_MS
}

/// How far back [`admit`] needs the listener's requests, in ms.
pub fn client_window_ms(rules: &RequestSettings) -> i64 {
    i64::from(rules.per_ip_minutes) * MINUTE_MS
}

/// The listener's address as stored: a keyed hash, per station, of the address (an IPv6
/// client by its /64, which one host usually holds whole).
pub fn client_hash(key: &[u8], station_id: &str, ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    };
    let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"song-request-client\n");
    mac.update(station_id.as_bytes());
    mac.update(b"\n");
    mac.update(ip.to_string().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The settings' limits, checked where they are changed: each error names the field.
pub fn validate(s: &RequestSettings) -> Result<(), String> {
    const WEEK: u32 = 7 * 24 * 60;
    for (field, v) in [
        ("requests.track_gap_minutes", s.track_gap_minutes),
        ("requests.artist_gap_minutes", s.artist_gap_minutes),
    ] {
        if v > WEEK {
            return Err(format!(
                "{field} is {v}; it must be at most {WEEK} (one week)."
            ));
        }
    }
    if !(1..=100).contains(&s.per_ip_limit) {
        return Err(format!(
            "requests.per_ip_limit is {}; it must be 1 to 100 requests.",
            s.per_ip_limit
        ));
    }
    if !(1..=1440).contains(&s.per_ip_minutes) {
        return Err(format!(
            "requests.per_ip_minutes is {}; it must be 1 to 1440 minutes (a day).",
            s.per_ip_minutes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000_000;

    fn ask(
        r: &RequestSettings,
        track: (&str, &str),
        recent: &[Recent],
        client: &[i64],
        now: i64,
    ) -> Result<(), Refusal> {
        let facts = Facts {
            recent,
            client,
            queued: 0,
        };
        admit(r, track, facts, now)
    }

    #[test]
    fn a_full_queue_takes_no_more() {
        let facts = |queued| Facts {
            recent: &[],
            client: &[],
            queued,
        };
        assert_eq!(
            admit(&rules(), ("aa", "A"), facts(MAX_QUEUE - 1), NOW),
            Ok(())
        );
        let full = admit(&rules(), ("aa", "A"), facts(MAX_QUEUE), NOW);
        assert_eq!(full, Err(Refusal::QueueFull));
    }

    fn rules() -> RequestSettings {
        RequestSettings {
            enabled: true,
            track_gap_minutes: 60,
            artist_gap_minutes: 30,
            per_ip_limit: 2,
            per_ip_minutes: 10,
        }
    }

    fn recent(sha: &str, artist: &str, minutes_ago: i64) -> Recent {
        Recent {
            sha256: sha.into(),
            artist: artist.into(),
            at_ms: NOW - minutes_ago * MINUTE_MS,
        }
    }

    #[test]
    fn a_track_inside_its_gap_is_refused_and_outside_taken() {
        let r = rules();
        let played = [recent("aa", "Band", 59)];
        assert_eq!(
            ask(&r, ("aa", "Band"), &played, &[], NOW),
            Err(Refusal::TrackGap { minutes: 60 })
        );
        assert_eq!(
            Refusal::TrackGap { minutes: 60 }.to_string(),
            "This track was played or requested in the last 60 minutes; request another one."
        );
        let long_ago = [recent("aa", "Band", 61)];
        assert_eq!(ask(&r, ("aa", "Band"), &long_ago, &[], NOW), Ok(()));
        let no_gap = RequestSettings {
            track_gap_minutes: 0,
            artist_gap_minutes: 0,
            ..r
        };
        assert_eq!(ask(&no_gap, ("aa", "Band"), &played, &[], NOW), Ok(()));
    }

    #[test]
    fn an_artist_inside_its_gap_is_refused_whatever_the_case() {
        let r = rules();
        let played = [recent("bb", " the band", 10)];
        assert_eq!(
            ask(&r, ("aa", "The Band"), &played, &[], NOW),
            Err(Refusal::ArtistGap {
                artist: "The Band".into(),
                minutes: 30
            })
        );
        // Tracks without an artist share no artist.
        let anonymous = [recent("bb", "", 10)];
        assert_eq!(ask(&r, ("aa", ""), &anonymous, &[], NOW), Ok(()));
        assert_eq!(
            ask(
                &r,
                ("aa", "Other"),
                &[recent("bb", "The Band", 31)],
                &[],
                NOW
            ),
            Ok(())
        );
    }

    #[test]
    fn a_listener_at_its_limit_is_told_when_room_comes_back() {
        let r = rules();
        let client = [NOW - 9 * MINUTE_MS, NOW - MINUTE_MS];
        assert_eq!(
            ask(&r, ("aa", "Band"), &[], &client, NOW),
            Err(Refusal::PerIp {
                limit: 2,
                minutes: 10,
                retry_after_secs: 60
            })
        );
        let older = [NOW - 11 * MINUTE_MS, NOW - MINUTE_MS];
        assert_eq!(ask(&r, ("aa", "Band"), &[], &older, NOW), Ok(()));
    }

    #[test]
    fn clients_hash_per_station_and_by_their_64() {
        let k = b"key";
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_hash(k, "s", a), client_hash(k, "s", b));
        assert_ne!(client_hash(k, "s", a), client_hash(k, "s", c));
        assert_ne!(client_hash(k, "s", a), client_hash(k, "t", a));
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(client_hash(k, "s", v4), client_hash(k, "s", mapped));
        assert!(!client_hash(k, "s", v4).contains("10.0.0.1"));
    }

    #[test]
    fn settings_out_of_range_name_their_field() {
        assert!(validate(&rules()).is_ok());
        let e = validate(&RequestSettings {
            per_ip_limit: 0,
            ..rules()
        })
        .expect_err("zero");
        assert!(e.contains("requests.per_ip_limit"), "{e}");
        let e = validate(&RequestSettings {
            track_gap_minutes: 20_000,
            ..rules()
        })
        .expect_err("too long");
        assert!(e.contains("requests.track_gap_minutes"), "{e}");
    }

    proptest! {
        /// Taking every request the rules allow, one listener never has more than its limit in
        /// any window, and no track is taken twice within its gap.
        #[test]
        fn what_is_admitted_keeps_the_gaps_and_the_limit(
            asks in proptest::collection::vec((0u8..4, 0i64..600), 1..60),
        ) {
            let r = RequestSettings { artist_gap_minutes: 0, ..rules() };
            let mut now = NOW;
            let mut taken: Vec<Recent> = Vec::new();
            let mut client: Vec<i64> = Vec::new();
            for (track, wait_s) in asks {
                now += wait_s * 1000;
                let sha = format!("t{track}");
                if ask(&r, (&sha, "A"), &taken, &client, now).is_ok() {
                    taken.push(Recent { sha256: sha, artist: "A".into(), at_ms: now });
                    client.push(now);
                }
            }
            let window = i64::from(r.per_ip_minutes) * MINUTE_MS;
            for &t in &client {
                let inside = client.iter().filter(|&&c| c >= t && c < t + window).count();
                prop_assert!(inside <= r.per_ip_limit as usize);
            }
            let gap = i64::from(r.track_gap_minutes) * MINUTE_MS;
            for (i, a) in taken.iter().enumerate() {
                for b in &taken[i + 1..] {
                    prop_assert!(a.sha256 != b.sha256 || b.at_ms - a.at_ms >= gap);
                }
            }
        }
    }
}

//! What the AutoDJ plays next: the station's schedule rules over its playlists, as pure code over
//! an injected clock ("now" is an argument) and an injected random number generator, so every
//! rule is testable without waiting.
//!
//! At each track change, the first rule that applies decides the playlist:
//! 1. **station ID**: a `station_id` playlist plays once the local hour (in the station's
//!    `timezone`) is no longer the hour of the last ID. A fresh start does not open with an ID:
//!    the first track counts as the hour's, so the first ID plays at the first change after the
//!    next hour begins. Several ID playlists share that one hourly turn and are chosen by weight.
//! 2. **interval**: an `interval` playlist once `every_songs` songs have played since its last
//!    turn (songs are tracks of rotation or scheduled playlists; jingles and IDs do not count).
//!    Several due at once play one after the other, in config order.
//! 3. **scheduled**: a `scheduled` playlist whose window contains now, in local time; of several,
//!    the first in config order. A window whose end is at or before its start crosses midnight
//!    and belongs to the day it starts on (a Friday 22:00–02:00 window runs into Saturday
//!    night). Windows are local wall-clock times: on a day a DST change skips, a window inside
//!    the skipped hour (02:00–03:00 in New York in March) does not happen; on a day an hour
//!    repeats, a window inside it runs through both passes.
//! 4. **rotation**: a rotation playlist chosen by weight; the shorthand `tracks`/`order` is one
//!    more of weight 1, named "default".
//!
//! Within a playlist, its own [`Picker`] chooses the track. A track is never cut: a window that
//! opens or closes, or an hour that turns, takes effect at the next track change.
//!
//! The AutoDJ picks the next track while the current one plays (to encode it in time), so a pick
//! is made ahead of its change: [`Schedule::confirm`] tells at the change whether it still obeys
//! the rules then; if not, [`Schedule::put_back`] keeps its track as that playlist's next one
//! (nothing is skipped) and a new pick is made. State moves on only when a track really starts
//! ([`Schedule::played`]) or cannot be played ([`Schedule::failed`]).
//!
//! Listeners' requests (`requests` of the configuration, oldest first) come before every rule:
//! the first one this schedule has not played is the next track. Each plays once: its id is
//! remembered until the control plane's queue no longer lists it. A request counts as a song
//! for the interval playlists.

use super::order::Picker;
use crate::config::{AutoDjConfig, PlaylistConfig, RequestConfig, TrackConfig};
use jiff::{Timestamp, Zoned};
use onda_shared::domain::{PlaylistKind, TimeOfDay};
use rand::RngExt as _;
use std::collections::HashMap;

/// A playlist whose every track failed in a row is passed over for this long (a missing file may
/// yet arrive), so a broken jingle or schedule never keeps the music from playing.
const REST: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// The next track and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pick {
    pub playlist: String,
    pub kind: PlaylistKind,
    pub track: TrackConfig,
    /// The listener request it plays, if it is one.
    pub request: Option<String>,
}

/// One station's schedule state, across tracks and configuration changes (kept by playlist
/// name).
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    lists: HashMap<String, ListState>,
    /// The local hour of the last station ID (or of the first track after a start).
    id_hour: Option<HourKey>,
    /// Requests played (or unplayable) here, while the configuration still lists them.
    requests_done: Vec<String>,
}

#[derive(Debug, Default)]
struct ListState {
    picker: Picker,
    /// Interval playlists: songs played since this playlist's last turn.
    songs_since: u32,
    /// A track picked but not played (its change came under another rule): played next.
    held: Option<TrackConfig>,
    failed_in_row: usize,
    resting_until: Option<Timestamp>,
}

/// An hour of local time. The offset is part of it so that the hour a DST change repeats is a
/// new hour (and gets its ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HourKey {
    date: jiff::civil::Date,
    hour: i8,
    offset: jiff::tz::Offset,
}

impl HourKey {
    fn of(local: &Zoned) -> HourKey {
        HourKey {
            date: local.date(),
            hour: local.hour(),
            offset: local.offset(),
        }
    }
}

/// What the rules require at a track change.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    StationId,
    /// This interval or scheduled playlist.
    Playlist(String),
    Rotation,
}

impl Schedule {
    /// The next track at `now`, or `None` when the configuration has no track at all.
    pub(crate) fn next<R: rand::Rng + ?Sized>(
        &mut self,
        cfg: &AutoDjConfig,
        now: Timestamp,
        rng: &mut R,
    ) -> Option<Pick> {
        if let Some(r) = self.next_request(cfg) {
            return Some(Pick {
                playlist: String::new(),
                kind: PlaylistKind::Rotation,
                track: r.track.clone(),
                request: Some(r.id.clone()),
            });
        }
        let lists = cfg.all_playlists();
        let chosen = match self.due(cfg, &lists, now) {
            Due::StationId => self.by_weight(&lists, PlaylistKind::StationId, now, rng),
            Due::Playlist(name) => lists.iter().find(|p| p.name == name).map(|p| &**p),
            Due::Rotation => self.by_weight(&lists, PlaylistKind::Rotation, now, rng),
        }?;
        let state = self.lists.entry(chosen.name.clone()).or_default();
        let track = match state.held.take() {
            Some(t) if chosen.tracks.contains(&t) => t,
            _ => {
                let weights: Vec<u32> = chosen.tracks.iter().map(|t| t.weight).collect();
                let i = state.picker.next(chosen.order, &weights, rng)?;
                chosen.tracks[i].clone()
            }
        };
        Some(Pick {
            playlist: chosen.name.clone(),
            kind: chosen.kind,
            track,
            request: None,
        })
    }

    /// The oldest request of the configuration not played here yet.
    fn next_request<'a>(&self, cfg: &'a AutoDjConfig) -> Option<&'a RequestConfig> {
        cfg.requests
            .iter()
            .find(|r| !self.requests_done.contains(&r.id))
    }

    /// Remembers that request `id` is done, forgetting those the configuration dropped.
    fn request_done(&mut self, id: &str, cfg: &AutoDjConfig) {
        self.requests_done
            .retain(|d| cfg.requests.iter().any(|r| &r.id == d));
        self.requests_done.push(id.to_string());
    }

    /// Whether `pick`, made earlier, is still what the rules want at `now` (and still in the
    /// configuration).
    pub(crate) fn confirm(&self, pick: &Pick, cfg: &AutoDjConfig, now: Timestamp) -> bool {
        let head = self.next_request(cfg).map(|r| &r.id);
        if pick.request.is_some() || head.is_some() {
            // A request waits: only it may play next (and a cleared one no longer).
            return pick.request.as_ref() == head;
        }
        let lists = cfg.all_playlists();
        let present = lists.iter().any(|p| {
            p.name == pick.playlist && p.kind == pick.kind && p.tracks.contains(&pick.track)
        });
        present
            && match self.due(cfg, &lists, now) {
                Due::StationId => pick.kind == PlaylistKind::StationId,
                Due::Playlist(name) => name == pick.playlist,
                Due::Rotation => pick.kind == PlaylistKind::Rotation,
            }
    }

    /// A pick that was not played: its track is its playlist's next one.
    pub(crate) fn put_back(&mut self, pick: Pick) {
        if pick.request.is_some() {
            // It is still in the queue, if it was not cleared.
            return;
        }
        self.lists.entry(pick.playlist).or_default().held = Some(pick.track);
    }

    /// `pick` started playing at `now`.
    pub(crate) fn played(&mut self, pick: &Pick, cfg: &AutoDjConfig, now: Timestamp) {
        if let Some(id) = &pick.request {
            self.request_done(id, cfg);
            self.count_song(cfg);
            self.first_hour(cfg, now);
            return;
        }
        let state = self.lists.entry(pick.playlist.clone()).or_default();
        state.failed_in_row = 0;
        state.resting_until = None;
        match pick.kind {
            PlaylistKind::StationId => {
                self.id_hour = Some(HourKey::of(&now.to_zoned(zone(cfg))));
            }
            PlaylistKind::Interval => state.songs_since = 0,
            PlaylistKind::Rotation | PlaylistKind::Scheduled => self.count_song(cfg),
        }
        self.first_hour(cfg, now);
    }

    /// A song played: every interval playlist is one song closer to its turn.
    fn count_song(&mut self, cfg: &AutoDjConfig) {
        for p in cfg
            .playlists
            .iter()
            .filter(|p| p.kind == PlaylistKind::Interval)
        {
            let s = self.lists.entry(p.name.clone()).or_default();
            s.songs_since = s.songs_since.saturating_add(1);
        }
    }

    /// The first track after a start is the hour's: the station does not open with an ID.
    fn first_hour(&mut self, cfg: &AutoDjConfig, now: Timestamp) {
        if self.id_hour.is_none() {
            self.id_hour = Some(HourKey::of(&now.to_zoned(zone(cfg))));
        }
    }

    /// `pick` could not be played (its file is missing or not audio). Once every track of its
    /// playlist failed in a row, the playlist rests for [`REST`] and the rules pass over it.
    pub(crate) fn failed(&mut self, pick: &Pick, cfg: &AutoDjConfig, now: Timestamp) {
        if let Some(id) = &pick.request {
            // Not tried again: the queue goes on.
            self.request_done(id, cfg);
            return;
        }
        let len = cfg
            .all_playlists()
            .iter()
            .find(|p| p.name == pick.playlist)
            .map_or(0, |p| p.tracks.len());
        let state = self.lists.entry(pick.playlist.clone()).or_default();
        state.failed_in_row += 1;
        if state.failed_in_row >= len {
            state.failed_in_row = 0;
            state.resting_until = Some(now + REST);
        }
    }

    fn playable(&self, p: &PlaylistConfig, now: Timestamp) -> bool {
        !p.tracks.is_empty()
            && self
                .lists
                .get(&p.name)
                .and_then(|s| s.resting_until)
                .is_none_or(|until| now >= until)
    }

    fn due(
        &self,
        cfg: &AutoDjConfig,
        lists: &[std::borrow::Cow<'_, PlaylistConfig>],
        now: Timestamp,
    ) -> Due {
        let local = now.to_zoned(zone(cfg));
        let usable = |kind: PlaylistKind| {
            lists
                .iter()
                .filter(move |p| p.kind == kind && self.playable(p, now))
        };
        let hour_turned = self.id_hour.is_some_and(|h| h != HourKey::of(&local));
        if hour_turned && usable(PlaylistKind::StationId).next().is_some() {
            return Due::StationId;
        }
        let interval = usable(PlaylistKind::Interval).find(|p| {
            let since = self.lists.get(&p.name).map_or(0, |s| s.songs_since);
            since >= p.every_songs.unwrap_or(u32::MAX)
        });
        if let Some(p) = interval {
            return Due::Playlist(p.name.clone());
        }
        if let Some(p) = usable(PlaylistKind::Scheduled).find(|p| in_window(p, &local)) {
            return Due::Playlist(p.name.clone());
        }
        Due::Rotation
    }

    /// A playlist of `kind` chosen by weight among the playable ones (among all of that kind
    /// when every one is resting: rotation must play something).
    fn by_weight<'a, R: rand::Rng + ?Sized>(
        &self,
        lists: &'a [std::borrow::Cow<'a, PlaylistConfig>],
        kind: PlaylistKind,
        now: Timestamp,
        rng: &mut R,
    ) -> Option<&'a PlaylistConfig> {
        let of_kind = || {
            lists
                .iter()
                .map(|p| &**p)
                .filter(move |p| p.kind == kind && !p.tracks.is_empty())
        };
        let mut candidates: Vec<&PlaylistConfig> =
            of_kind().filter(|p| self.playable(p, now)).collect();
        if candidates.is_empty() {
            candidates = of_kind().collect();
        }
        let total: u64 = candidates.iter().map(|p| u64::from(p.weight.max(1))).sum();
        if total == 0 {
            return None;
        }
        let mut x = rng.random_range(0..total);
        for p in candidates {
            let w = u64::from(p.weight.max(1));
            if x < w {
                return Some(p);
            }
            x -= w;
        }
        None
    }
}

/// The station's time zone; UTC if the name is unknown (validation refuses that, so only a tz
/// database changed under a running edge gets here).
fn zone(cfg: &AutoDjConfig) -> jiff::tz::TimeZone {
    cfg.timezone.zone().unwrap_or_else(|e| {
        tracing::warn!(autodj = %cfg.name, "{e}; using UTC");
        jiff::tz::TimeZone::UTC
    })
}

/// Whether a scheduled playlist's window contains the local time `local`.
fn in_window(p: &PlaylistConfig, local: &Zoned) -> bool {
    let (Some(start), Some(end)) = (
        p.start.map(TimeOfDay::minutes),
        p.end.map(TimeOfDay::minutes),
    ) else {
        return false;
    };
    let t =
        u16::try_from(local.hour()).unwrap_or(0) * 60 + u16::try_from(local.minute()).unwrap_or(0);
    let today = u8::try_from(local.weekday().to_monday_one_offset()).unwrap_or(1);
    let yesterday = if today == 1 { 7 } else { today - 1 };
    let on = |day: u8| p.days.is_empty() || p.days.contains(&day);
    if start < end {
        on(today) && (start..end).contains(&t)
    } else {
        // Crosses midnight: the evening part is today's window, the morning part yesterday's.
        (on(today) && t >= start) || (on(yesterday) && t < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::DateTime;
    use onda_shared::domain::{PlayOrder, TimeZoneName};
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    fn track(name: &str) -> TrackConfig {
        TrackConfig {
            file: format!("{name}.mp3").into(),
            artist: String::new(),
            title: name.to_string(),
            weight: 1,
            sha256: None,
            duration_ms: None,
        }
    }

    fn playlist(name: &str, kind: PlaylistKind, tracks: &[&str]) -> PlaylistConfig {
        PlaylistConfig {
            name: name.to_string(),
            kind,
            order: PlayOrder::Sequential,
            weight: 1,
            days: Vec::new(),
            start: None,
            end: None,
            every_songs: None,
            tracks: tracks.iter().map(|t| track(t)).collect(),
        }
    }

    fn station(timezone: &str, tracks: &[&str], playlists: Vec<PlaylistConfig>) -> AutoDjConfig {
        AutoDjConfig {
            name: "Test FM".to_string(),
            outputs: Vec::new(),
            live_mount: None,
            timezone: TimeZoneName::new(timezone),
            crossfade_ms: 0,
            order: PlayOrder::Sequential,
            tracks: tracks.iter().map(|t| track(t)).collect(),
            playlists,
            requests: Vec::new(),
        }
    }

    /// `2026-03-06T23:00` in `tz`.
    fn at(local: &str, tz: &str) -> Timestamp {
        local
            .parse::<DateTime>()
            .expect("datetime")
            .in_tz(tz)
            .expect("zone")
            .timestamp()
    }

    /// Drives a schedule the way `autodj::run` does: the next track is picked while the current
    /// one plays, and confirmed (or put back and re-picked) at its change.
    struct Sim {
        schedule: Schedule,
        rng: StdRng,
        prepared: Option<Pick>,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                schedule: Schedule::default(),
                rng: StdRng::seed_from_u64(7),
                prepared: None,
            }
        }

        /// The track change at `now`: what starts playing.
        fn change(&mut self, cfg: &AutoDjConfig, now: Timestamp) -> Pick {
            let pick = match self.prepared.take() {
                Some(p) if self.schedule.confirm(&p, cfg, now) => p,
                stale => {
                    if let Some(p) = stale {
                        self.schedule.put_back(p);
                    }
                    self.schedule
                        .next(cfg, now, &mut self.rng)
                        .expect("a track")
                }
            };
            self.schedule.played(&pick, cfg, now);
            self.prepared = self.schedule.next(cfg, now, &mut self.rng);
            pick
        }

        /// The titles of `n` changes, one every `every` from `start`.
        fn titles(
            &mut self,
            cfg: &AutoDjConfig,
            start: Timestamp,
            every: jiff::SignedDuration,
            n: usize,
        ) -> Vec<String> {
            (0..n)
                .map(|i| {
                    let now = start + every * i32::try_from(i).expect("small");
                    self.change(cfg, now).track.title
                })
                .collect()
        }
    }

    fn scheduled(name: &str, days: &[u8], start: &str, end: &str) -> PlaylistConfig {
        PlaylistConfig {
            days: days.to_vec(),
            start: Some(start.parse().expect("HH:MM")),
            end: Some(end.parse().expect("HH:MM")),
            ..playlist(name, PlaylistKind::Scheduled, &["show"])
        }
    }

    fn playlist_at(cfg: &AutoDjConfig, now: Timestamp) -> String {
        let mut rng = StdRng::seed_from_u64(1);
        Schedule::default()
            .next(cfg, now, &mut rng)
            .expect("a track")
            .playlist
    }

    #[test]
    fn a_scheduled_window_crossing_midnight_wins_on_its_days_in_local_time() {
        const NY: &str = "America/New_York";
        // Friday night 22:00 to 02:00 (Saturday morning), New York time.
        let cfg = station(
            NY,
            &["song"],
            vec![scheduled("friday night", &[5], "22:00", "02:00")],
        );
        // 2026-03-06 is a Friday.
        for (local, expected) in [
            ("2026-03-06T21:59", "default"),
            ("2026-03-06T22:00", "friday night"),
            ("2026-03-06T23:30", "friday night"),
            ("2026-03-07T00:00", "friday night"),
            ("2026-03-07T01:59", "friday night"),
            ("2026-03-07T02:00", "default"),
            // Saturday evening is not in the window (it belongs to Friday only) …
            ("2026-03-07T23:00", "default"),
            // … nor is Friday morning (that part belongs to Thursday's window).
            ("2026-03-06T01:00", "default"),
            ("2026-03-13T23:00", "friday night"),
        ] {
            assert_eq!(
                playlist_at(&cfg, at(local, NY)),
                expected,
                "{local} in {NY}"
            );
        }
        // Local time, not UTC: Friday 23:00 in New York is Saturday 04:00 UTC.
        let utc: Timestamp = "2026-03-07T04:00:00Z".parse().expect("ts");
        assert_eq!(playlist_at(&cfg, utc), "friday night");
        let cfg_utc = station("UTC", &["song"], cfg.playlists.clone());
        assert_eq!(playlist_at(&cfg_utc, utc), "default");
    }

    #[test]
    fn a_window_in_the_hour_dst_skips_does_not_happen_and_a_repeated_hour_runs_twice() {
        const NY: &str = "America/New_York";
        let cfg = station(
            NY,
            &["song"],
            vec![scheduled("night", &[], "02:00", "03:00")],
        );
        // 2026-03-08: New York jumps from 02:00 to 03:00. Minute by minute from 00:00 to 05:00
        // local (4 real hours), the window never opens.
        let start = at("2026-03-08T00:00", NY);
        let in_window = |start: Timestamp, minutes: i64| {
            (0..minutes)
                .filter(|m| {
                    playlist_at(&cfg, start + jiff::SignedDuration::from_mins(*m)) == "night"
                })
                .count()
        };
        assert_eq!(in_window(start, 4 * 60), 0);
        // The next day it runs for one hour.
        assert_eq!(in_window(at("2026-03-09T00:00", NY), 5 * 60), 60);
        // 2026-11-01: 01:00–02:00 happens twice; a window there runs through both passes.
        let cfg = station(
            NY,
            &["song"],
            vec![scheduled("night", &[], "01:00", "02:00")],
        );
        let count = (0..5 * 60)
            .filter(|m| {
                let now = at("2026-11-01T00:00", NY) + jiff::SignedDuration::from_mins(*m);
                playlist_at(&cfg, now) == "night"
            })
            .count();
        assert_eq!(count, 120);
    }

    #[test]
    fn of_several_scheduled_playlists_in_their_window_the_first_in_config_order_wins() {
        let cfg = station(
            "Europe/Berlin",
            &["song"],
            vec![
                scheduled("morning", &[], "06:00", "10:00"),
                scheduled("weekday", &[1, 2, 3, 4, 5], "00:00", "00:00"),
            ],
        );
        // 2026-03-09 is a Monday.
        let berlin = |s| at(s, "Europe/Berlin");
        assert_eq!(playlist_at(&cfg, berlin("2026-03-09T07:00")), "morning");
        assert_eq!(playlist_at(&cfg, berlin("2026-03-09T11:00")), "weekday");
        assert_eq!(playlist_at(&cfg, berlin("2026-03-14T11:00")), "default");
    }

    #[test]
    fn a_scheduled_playlist_takes_over_at_the_first_change_in_its_window() {
        let cfg = station(
            "UTC",
            &["a", "b", "c"],
            vec![scheduled("show", &[], "10:00", "10:10")],
        );
        let mut sim = Sim::new();
        let titles = sim.titles(
            &cfg,
            at("2026-03-09T09:52", "UTC"),
            jiff::SignedDuration::from_mins(4),
            7,
        );
        // Changes at 09:52, 09:56, 10:00, 10:04, 10:08, 10:12, 10:16: the rotation track picked
        // at 09:56 for 10:00 is put back and plays after the show.
        assert_eq!(titles, ["a", "b", "show", "show", "show", "c", "a"]);
    }

    #[test]
    fn an_interval_playlist_every_three_songs_plays_after_each_third_song() {
        let mut jingles = playlist("jingles", PlaylistKind::Interval, &["J"]);
        jingles.every_songs = Some(3);
        let cfg = station("UTC", &["S"], vec![jingles]);
        let mut sim = Sim::new();
        let titles = sim.titles(
            &cfg,
            at("2026-03-09T12:00", "UTC"),
            jiff::SignedDuration::from_secs(200),
            12,
        );
        assert_eq!(titles.concat(), "SSSJSSSJSSSJ");
        // Songs of a scheduled playlist count too.
        let mut jingles = playlist("jingles", PlaylistKind::Interval, &["J"]);
        jingles.every_songs = Some(2);
        let cfg = station(
            "UTC",
            &["S"],
            vec![jingles, scheduled("show", &[], "12:00", "13:00")],
        );
        let mut sim = Sim::new();
        let titles = sim.titles(
            &cfg,
            at("2026-03-09T11:52", "UTC"),
            jiff::SignedDuration::from_mins(4),
            7,
        );
        assert_eq!(titles.join(" "), "S S J show show J show");
    }

    #[test]
    fn a_station_id_plays_at_the_first_change_after_each_hour_turns_but_never_first() {
        let ids = playlist("ids", PlaylistKind::StationId, &["ID"]);
        let mut jingles = playlist("jingles", PlaylistKind::Interval, &["J"]);
        jingles.every_songs = Some(4);
        let cfg = station("Asia/Kolkata", &["S"], vec![ids, jingles]);
        let mut sim = Sim::new();
        // A start at 09:59 (Kolkata, UTC+05:30): no ID first, though the hour turns during it.
        let start = at("2026-03-09T09:59", "Asia/Kolkata");
        let step = jiff::SignedDuration::from_secs(4 * 60 + 30);
        let plays: Vec<(String, String)> = (0..30)
            .map(|i| {
                let now = start + step * i;
                let local = now.to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").expect("tz"));
                let title = sim.change(&cfg, now).track.title;
                (format!("{:02}:{:02}", local.hour(), local.minute()), title)
            })
            .collect();
        assert_eq!(plays[0].1, "S", "{plays:?}");
        let ids: Vec<&str> = plays
            .iter()
            .filter(|(_, t)| t == "ID")
            .map(|(at, _)| at.as_str())
            .collect();
        // Changes at 09:59, 10:03:30, …: the first change of each new hour is its ID.
        let first_of_hour: Vec<&str> = plays
            .windows(2)
            .filter(|w| w[0].0[..2] != w[1].0[..2])
            .map(|w| w[1].0.as_str())
            .collect();
        assert_eq!(ids, first_of_hour, "{plays:?}");
        assert_eq!(ids.len(), 3, "{plays:?}");
        // A start in the middle of an hour: no ID before the next hour begins.
        let mut sim = Sim::new();
        let titles = sim.titles(
            &cfg,
            at("2026-03-09T10:10", "Asia/Kolkata"),
            jiff::SignedDuration::from_mins(4),
            14,
        );
        let first_id = titles.iter().position(|t| t == "ID");
        // Changes at 10:10, 10:14, …, 10:58, 11:02: the ID is the 14th.
        assert_eq!(first_id, Some(13), "{titles:?}");
        // IDs do not count as songs: four songs between jingles, whatever comes between.
        let songs_between: Vec<usize> = plays
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .split(|t| *t == "J")
            .map(|run| run.iter().filter(|t| **t == "S").count())
            .collect();
        assert!(songs_between.len() >= 5, "{plays:?}");
        assert!(
            songs_between[..songs_between.len() - 1]
                .iter()
                .all(|n| *n == 4),
            "{plays:?}"
        );
    }

    #[test]
    fn rotation_playlists_are_chosen_by_weight() {
        let mut heavy = playlist("heavy", PlaylistKind::Rotation, &["h1", "h2"]);
        heavy.weight = 3;
        let light = playlist("light", PlaylistKind::Rotation, &["l1", "l2"]);
        let cfg = station("UTC", &["d1", "d2"], vec![heavy, light]);
        let mut sim = Sim::new();
        let now = at("2026-03-09T12:00", "UTC");
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..10_000 {
            *counts.entry(sim.change(&cfg, now).playlist).or_default() += 1;
        }
        // Weights 3 : 1 : 1 (the shorthand is "default", weight 1) over 10 000 picks.
        let share = |name: &str| counts[name] as f64 / 10_000.0;
        assert!((share("heavy") - 0.6).abs() < 0.03, "{counts:?}");
        assert!((share("light") - 0.2).abs() < 0.03, "{counts:?}");
        assert!((share("default") - 0.2).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn the_shorthand_tracks_alone_play_in_their_order() {
        let cfg = station("UTC", &["a", "b", "c"], Vec::new());
        let mut sim = Sim::new();
        let titles = sim.titles(
            &cfg,
            at("2026-03-09T12:00", "UTC"),
            jiff::SignedDuration::from_mins(3),
            40,
        );
        // Sequential across hours: no IDs, no jingles, nothing else.
        assert_eq!(titles.concat(), "abc".repeat(14)[..40]);
        let mut shuffled = cfg.clone();
        shuffled.order = PlayOrder::Shuffle;
        let mut sim = Sim::new();
        let titles = sim.titles(
            &shuffled,
            at("2026-03-09T12:00", "UTC"),
            jiff::SignedDuration::from_mins(3),
            30,
        );
        for round in titles.chunks(3) {
            let mut r = round.to_vec();
            r.sort();
            assert_eq!(r, ["a", "b", "c"]);
        }
    }

    #[test]
    fn a_broken_jingle_playlist_rests_and_the_music_goes_on() {
        let mut jingles = playlist("jingles", PlaylistKind::Interval, &["J"]);
        jingles.every_songs = Some(1);
        let cfg = station("UTC", &["S"], vec![jingles]);
        let mut schedule = Schedule::default();
        let mut rng = StdRng::seed_from_u64(3);
        let now = at("2026-03-09T12:00", "UTC");
        let song = schedule.next(&cfg, now, &mut rng).expect("a track");
        schedule.played(&song, &cfg, now);
        let jingle = schedule.next(&cfg, now, &mut rng).expect("a track");
        assert_eq!(jingle.track.title, "J");
        schedule.failed(&jingle, &cfg, now);
        // Every track of it failed: songs go on, and the jingle is tried again after a rest.
        assert_eq!(
            schedule.next(&cfg, now, &mut rng).expect("a").track.title,
            "S"
        );
        let later = now + REST;
        assert_eq!(
            schedule.next(&cfg, later, &mut rng).expect("a").track.title,
            "J"
        );
    }

    fn request(id: &str, title: &str) -> RequestConfig {
        RequestConfig {
            id: id.to_string(),
            track: track(title),
        }
    }

    #[test]
    fn requests_play_next_in_order_once_each_and_the_rotation_goes_on() {
        let mut cfg = station("UTC", &["a", "b", "c"], Vec::new());
        let start = at("2026-03-06T10:00", "UTC");
        let every = jiff::SignedDuration::from_mins(3);
        let mut sim = Sim::new();
        assert_eq!(sim.titles(&cfg, start, every, 2), ["a", "b"]);
        // Two requests arrive while "b" plays: they come after it, oldest first.
        cfg.requests = vec![request("r1", "x"), request("r2", "y")];
        let picks: Vec<Pick> = (2..6)
            .map(|i| sim.change(&cfg, start + every * i))
            .collect();
        let titles: Vec<&str> = picks.iter().map(|p| p.track.title.as_str()).collect();
        assert_eq!(titles, ["x", "y", "c", "a"]);
        assert_eq!(picks[0].request.as_deref(), Some("r1"));
        assert_eq!(picks[1].request.as_deref(), Some("r2"));
        assert!(picks[2].request.is_none());
        // The control plane drops the played ones; a new one plays once.
        cfg.requests = vec![request("r3", "z")];
        assert_eq!(sim.titles(&cfg, start + every * 6, every, 2), ["z", "b"]);
    }

    #[test]
    fn a_request_cleared_before_it_plays_is_not_played_and_a_new_one_replaces_a_prepared_pick() {
        let mut cfg = station("UTC", &["a", "b", "c"], Vec::new());
        let now = at("2026-03-06T10:00", "UTC");
        let mut sim = Sim::new();
        assert_eq!(sim.change(&cfg, now).track.title, "a");
        // "b" is prepared; a request arrives: the prepared pick no longer stands.
        let prepared = sim.prepared.clone().expect("prepared");
        assert_eq!(prepared.track.title, "b");
        cfg.requests = vec![request("r1", "x")];
        assert!(!sim.schedule.confirm(&prepared, &cfg, now));
        assert_eq!(sim.change(&cfg, now).track.title, "x");
        // "b" was put back, so nothing of the rotation is skipped.
        cfg.requests.clear();
        assert_eq!(sim.change(&cfg, now).track.title, "b");
        // A request prepared and then cleared gives way to the rotation.
        cfg.requests = vec![request("r2", "y")];
        let mut rng = StdRng::seed_from_u64(3);
        let pick = sim.schedule.next(&cfg, now, &mut rng).expect("pick");
        assert_eq!(pick.request.as_deref(), Some("r2"));
        cfg.requests.clear();
        assert!(!sim.schedule.confirm(&pick, &cfg, now));
    }

    #[test]
    fn an_unplayable_request_is_passed_over() {
        let mut cfg = station("UTC", &["a"], Vec::new());
        cfg.requests = vec![request("r1", "x"), request("r2", "y")];
        let now = at("2026-03-06T10:00", "UTC");
        let mut rng = StdRng::seed_from_u64(3);
        let mut schedule = Schedule::default();
        let pick = schedule.next(&cfg, now, &mut rng).expect("pick");
        schedule.failed(&pick, &cfg, now);
        let next = schedule.next(&cfg, now, &mut rng).expect("pick");
        assert_eq!(next.request.as_deref(), Some("r2"));
    }

    proptest::proptest! {
        /// Whatever the queue looks like at each change (requests added, played ones dropped
        /// or not yet), every request plays exactly once, in the order it was queued.
        #[test]
        fn every_request_plays_once_in_queue_order(
            arrivals in proptest::collection::vec(0usize..3, 1..12),
            lag in proptest::collection::vec(proptest::bool::ANY, 12),
        ) {
            let mut cfg = station("UTC", &["a", "b"], Vec::new());
            let start = at("2026-03-06T10:00", "UTC");
            let mut sim = Sim::new();
            let mut queued = 0usize;
            let mut played: Vec<String> = Vec::new();
            for (i, n) in arrivals.iter().enumerate() {
                for _ in 0..*n {
                    cfg.requests.push(request(&format!("r{queued}"), &format!("t{queued}")));
                    queued += 1;
                }
                let now = start + jiff::SignedDuration::from_mins(3) * i32::try_from(i).expect("i");
                let pick = sim.change(&cfg, now);
                if let Some(id) = pick.request {
                    played.push(id);
                }
                // The control plane drops played requests, sometimes a round late.
                if !lag[i] {
                    cfg.requests.retain(|r| !played.contains(&r.id));
                }
            }
            // Drain: the rest plays.
            for i in 0..queued + 1 {
                let now = start + jiff::SignedDuration::from_hours(1) + jiff::SignedDuration::from_mins(3) * i32::try_from(i).expect("i");
                if let Some(id) = sim.change(&cfg, now).request {
                    played.push(id);
                }
            }
            let expected: Vec<String> = (0..queued).map(|i| format!("r{i}")).collect();
            proptest::prop_assert_eq!(played, expected);
        }
    }
}

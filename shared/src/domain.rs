//! The vocabulary every crate shares: audio formats, playlist kinds, play orders, times of day and
//! time-zone names. The panel API, the control protocol and the edge's configuration use these
//! same types, so a value is checked once where it comes in (a request body, a protocol frame, a
//! TOML file, a database row) and the crates cannot drift apart. On the wire each is the plain
//! string it has always been (`"mp3"`, `"station_id"`, `"22:00"`, `"Europe/Berlin"`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A name that is not one of a vocabulary's values (a database column or a string from outside).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {what}: expected {expected}")]
pub struct UnknownName {
    what: &'static str,
    value: String,
    expected: &'static str,
}

/// `ALL`, `as_str`, `parse`, `FromStr` and `Display` of an enum whose wire names are listed
/// once here; a test checks that serde writes the same names.
macro_rules! names {
    ($ty:ident, $what:literal, $expected:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// The name on the wire, in configuration files and in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == s)
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                Self::parse(s).ok_or_else(|| UnknownName {
                    what: $what,
                    value: s.to_string(),
                    expected: $expected,
                })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Audio formats a mount can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// MPEG-1 Layer III frames.
    Mp3,
    /// AAC in ADTS frames.
    Aac,
    /// Opus in Ogg pages.
    Opus,
}

names!(AudioFormat, "an audio format", r#""mp3", "aac" or "opus""#, [
    Mp3 => "mp3",
    Aac => "aac",
    Opus => "opus",
]);

/// Kinds of AutoDJ playlists. At each track change the AutoDJ plays: a station ID once the hour
/// has turned; else an interval playlist whose turn has come; else a scheduled playlist in its
/// window; else a rotation playlist chosen by weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlaylistKind {
    /// The general rotation, chosen by weight among the station's rotation playlists.
    #[default]
    Rotation,
    /// Wins over rotation in its window (`days`, `start`, `end`; in the panel API it needs the
    /// plan's `scheduling` feature).
    Scheduled,
    /// One track every `every_songs` songs: jingles (needs `scheduling`).
    Interval,
    /// One track at the first track change of every hour (needs `scheduling`).
    StationId,
}

names!(PlaylistKind, "a playlist kind", r#""rotation", "scheduled", "interval" or "station_id""#, [
    Rotation => "rotation",
    Scheduled => "scheduled",
    Interval => "interval",
    StationId => "station_id",
]);

/// Order of the tracks within a playlist.
// The edge's configuration defaults to `sequential` (a hand-written list plays as written); the
// panel API creates playlists in `shuffle` unless told otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlayOrder {
    /// Every track once in a random order, then a new order; never the same track twice in a row.
    Shuffle,
    /// In list order, then again.
    #[default]
    Sequential,
    /// Independent random picks in proportion to each track's weight; never the same track twice
    /// in a row.
    Random,
}

names!(PlayOrder, "a play order", r#""shuffle", "sequential" or "random""#, [
    Shuffle => "shuffle",
    Sequential => "sequential",
    Random => "random",
]);

/// A time of day on a 24-hour clock, written "HH:MM" (00:00 to 23:59) everywhere: in the panel
/// API, on the control channel and in the edge's configuration. Decoding checks it, so a value of
/// this type is always a real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

/// A string that is not a time "HH:MM"; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a time of day \"HH:MM\" (00:00 to 23:59)")]
pub struct InvalidTimeOfDay(String);

impl TimeOfDay {
    /// `None` unless `hour` < 24 and `minute` < 60.
    pub fn new(hour: u8, minute: u8) -> Option<TimeOfDay> {
        (hour < 24 && minute < 60).then_some(TimeOfDay { hour, minute })
    }

    pub fn hour(self) -> u8 {
        self.hour
    }

    pub fn minute(self) -> u8 {
        self.minute
    }

    /// Minutes since midnight, 0 to 1439.
    pub fn minutes(self) -> u16 {
        u16::from(self.hour) * 60 + u16::from(self.minute)
    }
}

impl FromStr for TimeOfDay {
    type Err = InvalidTimeOfDay;

    /// Exactly two digits, a colon, two digits: "7:30" or "07:30:00" would be guesses.
    fn from_str(s: &str) -> Result<Self, InvalidTimeOfDay> {
        let two_digits = |p: &str| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u8>().ok())
                .flatten()
        };
        s.split_once(':')
            .and_then(|(h, m)| TimeOfDay::new(two_digits(h)?, two_digits(m)?))
            .ok_or_else(|| InvalidTimeOfDay(s.to_string()))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TimeOfDay;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time of day \"HH:MM\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TimeOfDay, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for TimeOfDay {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A time of day on a 24-hour clock, \"HH:MM\" (00:00 to 23:59).",
            ))
            .pattern(Some("^([01][0-9]|2[0-3]):[0-5][0-9]$"))
            .examples(["22:00"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for TimeOfDay {}

/// An IANA time-zone name such as "Europe/Berlin" or "UTC".
// Any string decodes: whether the tz database knows the zone is checked where a zone is needed
// ([`TimeZoneName::zone`]), so a node whose tz database is older than the control plane's refuses
// that one station, not the whole desired state it arrived in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct TimeZoneName(String);

/// Why a [`TimeZoneName`] names no zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownTimeZone {
    #[error("timezone is empty: name an IANA time zone such as \"Europe/Berlin\"")]
    Empty,
    #[error(
        "timezone = {0:?} is not a known IANA time zone (such as \"Europe/Berlin\" or \"UTC\")"
    )]
    Unknown(String),
}

impl TimeZoneName {
    pub fn new(name: impl Into<String>) -> TimeZoneName {
        TimeZoneName(name.into())
    }

    pub fn utc() -> TimeZoneName {
        TimeZoneName("UTC".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The zone from the system's tz database (`/usr/share/zoneinfo`). "UTC" is known even on a
    /// machine without one.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, UnknownTimeZone> {
        let name = self.0.as_str();
        if name.eq_ignore_ascii_case("UTC") {
            return Ok(jiff::tz::TimeZone::UTC);
        }
        if name.trim().is_empty() {
            return Err(UnknownTimeZone::Empty);
        }
        jiff::tz::db()
            .get(name)
            .map_err(|_| UnknownTimeZone::Unknown(name.to_string()))
    }
}

/// Schedules without a named zone run in UTC.
impl Default for TimeZoneName {
    fn default() -> Self {
        TimeZoneName::utc()
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The names `as_str` gives are the ones serde writes and reads, for every value.
    fn names_match_serde<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + fmt::Debug + Serialize + for<'de> Deserialize<'de>,
    {
        for &v in all {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", as_str(v)));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
    }

    #[test]
    fn enum_names_are_the_serde_names() {
        names_match_serde(&AudioFormat::ALL, AudioFormat::as_str);
        names_match_serde(&PlaylistKind::ALL, PlaylistKind::as_str);
        names_match_serde(&PlayOrder::ALL, PlayOrder::as_str);
        assert_eq!(
            PlaylistKind::parse("station_id"),
            Some(PlaylistKind::StationId)
        );
        assert_eq!("random".parse::<PlayOrder>(), Ok(PlayOrder::Random));
        assert_eq!(AudioFormat::Opus.to_string(), "opus");
        assert_eq!(PlaylistKind::default(), PlaylistKind::Rotation);
        assert_eq!(PlayOrder::default(), PlayOrder::Sequential);
    }

    #[test]
    fn an_unknown_name_is_an_error_that_quotes_it() {
        let e = "flac".parse::<AudioFormat>().unwrap_err().to_string();
        assert_eq!(
            e,
            r#""flac" is not an audio format: expected "mp3", "aac" or "opus""#
        );
        let e = "weekly".parse::<PlaylistKind>().unwrap_err().to_string();
        assert!(e.contains("\"weekly\"") && e.contains("station_id"), "{e}");
        assert!("Shuffle".parse::<PlayOrder>().is_err());
        let e = serde_json::from_str::<AudioFormat>("\"flac\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flac"), "{e}");
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        let t: TimeOfDay = "00:00".parse().unwrap();
        assert_eq!((t.hour(), t.minute(), t.minutes()), (0, 0, 0));
        let t: TimeOfDay = "23:59".parse().unwrap();
        assert_eq!((t.hour(), t.minute(), t.minutes()), (23, 59, 23 * 60 + 59));
        assert_eq!(TimeOfDay::new(7, 5).unwrap().to_string(), "07:05");
        assert_eq!(TimeOfDay::new(24, 0), None);
        for bad in [
            "24:00",
            "7:30",
            "07:3",
            "07:60",
            "0730",
            "+7:30",
            "07:30:00",
            "",
            "0a:00",
            "-1:00",
            "٠٧:٣٠",
        ] {
            assert_eq!(
                bad.parse::<TimeOfDay>(),
                Err(InvalidTimeOfDay(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            "25:00".parse::<TimeOfDay>().unwrap_err().to_string(),
            r#""25:00" is not a time of day "HH:MM" (00:00 to 23:59)"#
        );
    }

    #[test]
    fn a_time_of_day_is_a_string_on_the_wire_checked_when_decoded() {
        let t = TimeOfDay::new(22, 0).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#""22:00""#);
        assert_eq!(serde_json::from_str::<TimeOfDay>(r#""22:00""#).unwrap(), t);
        let e = serde_json::from_str::<TimeOfDay>(r#""25:00""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#""25:00" is not a time of day"#), "{e}");
        let e = serde_json::from_str::<TimeOfDay>("2200")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a time of day \"HH:MM\""), "{e}");
        // TOML (the edge's configuration) reads it the same way.
        #[derive(Debug, Deserialize)]
        struct Window {
            #[allow(dead_code)]
            start: TimeOfDay,
        }
        let e = toml::from_str::<Window>("start = \"9:00\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#""9:00" is not a time of day"#), "{e}");
    }

    #[test]
    fn time_zone_names_are_checked_when_used() {
        assert_eq!(TimeZoneName::utc().zone().unwrap(), jiff::tz::TimeZone::UTC);
        assert!(TimeZoneName::new("Europe/Berlin").zone().is_ok());
        assert_eq!(TimeZoneName::new(" ").zone(), Err(UnknownTimeZone::Empty));
        let mars = TimeZoneName::new("Mars/Olympus_Mons");
        assert_eq!(
            mars.zone().unwrap_err().to_string(),
            r#"timezone = "Mars/Olympus_Mons" is not a known IANA time zone (such as "Europe/Berlin" or "UTC")"#
        );
        // Any name decodes (a node may know fewer zones than the control plane); it is the plain
        // string on the wire.
        let decoded: TimeZoneName = serde_json::from_str(r#""Mars/Olympus_Mons""#).unwrap();
        assert_eq!(decoded, mars);
        assert_eq!(
            serde_json::to_string(&mars).unwrap(),
            r#""Mars/Olympus_Mons""#
        );
        assert_eq!(TimeZoneName::default().as_str(), "UTC");
    }
}

//! Input rules and plan limits, as pure functions so they are tested without a server.

use onda_shared::api::{Mount, Plan, PlanLimits, PlanPrices, RequestSettings};
use std::collections::HashSet;

/// Why an input or a plan limit refuses a request: the API answers 422 for a value, 403 (with
/// the limit's name) for a plan limit and 400 for a malformed request.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Value(String),
    #[error("{detail}")]
    PlanLimit { limit: &'static str, detail: String },
    #[error("{0}")]
    Request(String),
}

pub const MAX_NAME: usize = 100;
pub const MAX_TEXT: usize = 2000;

pub fn name(field: &str, value: &str) -> Result<String, Invalid> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Invalid::Value(format!("{field} must not be empty.")));
    }
    if v.chars().count() > MAX_NAME {
        return Err(Invalid::Value(format!(
            "{field} is longer than {MAX_NAME} characters."
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(Invalid::Value(format!(
            "{field} must not contain control characters."
        )));
    }
    Ok(v.to_string())
}

/// Ids as the API hands them out (`plan_basic`, `stn_k3v9…`): short, lowercase, no surprises.
pub fn is_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub fn text(field: &str, value: &str) -> Result<String, Invalid> {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Invalid::Value(format!(
            "{field} must not contain control characters."
        )));
    }
    if value.chars().count() > MAX_TEXT {
        return Err(Invalid::Value(format!(
            "{field} is longer than {MAX_TEXT} characters."
        )));
    }
    Ok(value.trim().to_string())
}

pub fn email(value: &str) -> Result<String, Invalid> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    let ok = v.len() <= 254
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(v.to_string())
    } else {
        Err(Invalid::Value(format!(
            "email {v:?} is not an e-mail address."
        )))
    }
}

/// A tenant's commission in basis points: 0 (none) to 10000 (all of a payment).
pub fn fee_bps(value: u32) -> Result<u32, Invalid> {
    if value <= 10_000 {
        Ok(value)
    } else {
        Err(Invalid::Value(format!(
            "platform_fee_bps = {value} must be between 0 and 10000 (basis points: 2000 is 20 %)."
        )))
    }
}

/// Slugs appear in public URLs: 2–48 of a-z, 0-9 and '-', not starting or ending with '-'.
pub fn slug(value: &str) -> Result<String, Invalid> {
    let ok = (2..=48).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(value.to_string())
    } else {
        Err(Invalid::Value(format!(
            "slug {value:?} must be 2 to 48 characters of a-z, 0-9 and '-', not starting or ending with '-'."
        )))
    }
}

/// A station's slug: a [`slug`] that is not one of the path segments an edge node answers itself
/// (the shared rule of [`onda_shared::paths`], which the edge checks too).
pub fn station_slug(value: &str) -> Result<String, Invalid> {
    let v = slug(value)?;
    onda_shared::paths::check_station_slug(&v).map_err(|why| Invalid::Value(sentence(why)))?;
    Ok(v)
}

/// A live stream's slug: a [`slug`] that an edge takes as a stream name (`/hls/{slug}/…`).
pub fn stream_slug(value: &str) -> Result<String, Invalid> {
    let v = slug(value)?;
    onda_shared::paths::check_live_stream_name(&v).map_err(|why| Invalid::Value(sentence(why)))?;
    Ok(v)
}

/// Every path a station's mounts take on an edge (`/{slug}{mount}`) passes the edge's own check.
pub fn edge_paths(slug: &str, mounts: &[Mount]) -> Result<(), Invalid> {
    for m in mounts {
        let path = format!("/{slug}{}", m.path);
        onda_shared::paths::check_edge_path(&path)
            .map_err(|why| Invalid::Value(sentence(format!("Mount {:?}: {why}", m.path))))?;
    }
    Ok(())
}

/// A rule's message as a sentence: capitalised, ending with a full stop.
fn sentence(s: String) -> String {
    let mut c = s.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// A slug made from a station name ("Radio Ñu 101!" → "radio-u-101"); `None` when nothing usable
/// is left.
pub fn slug_from_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_matches('-').to_string();
    (out.len() >= 2).then_some(out)
}

pub fn currency(value: &str) -> Result<String, Invalid> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_string())
    } else {
        Err(Invalid::Value(format!(
            "currency {value:?} must be a three-letter ISO 4217 code such as \"USD\"."
        )))
    }
}

/// Upper bound for any count-like limit, so plans stay meaningful and fit SQL integers.
pub const MAX_COUNT: u32 = 1_000_000;
/// Upper bound for prices and storage (fits a signed 64-bit column).
pub const MAX_BIG: u64 = i64::MAX as u64;

/// A plan's live ABR ladder, checked: at most `MAX_LIVE_RENDITIONS` rungs of distinct even
/// heights and sane bitrates.
fn renditions(live_renditions: &[onda_shared::api::LiveRendition]) -> Result<(), Invalid> {
    if live_renditions.len() > onda_shared::api::MAX_LIVE_RENDITIONS {
        return Err(Invalid::Value(format!(
            "limits.live_renditions has {} rungs; at most {} are accepted.",
            live_renditions.len(),
            onda_shared::api::MAX_LIVE_RENDITIONS
        )));
    }
    for (i, r) in live_renditions.iter().enumerate() {
        if !(144..=2160).contains(&r.height) || r.height % 2 != 0 {
            return Err(Invalid::Value(format!(
                "limits.live_renditions[{i}].height must be even, 144 to 2160, got {}.",
                r.height
            )));
        }
        if !(100..=20_000).contains(&r.video_kbps) {
            return Err(Invalid::Value(format!(
                "limits.live_renditions[{i}].video_kbps must be 100 to 20000, got {}.",
                r.video_kbps
            )));
        }
        if live_renditions[..i].iter().any(|o| o.height == r.height) {
            return Err(Invalid::Value(format!(
                "limits.live_renditions has height {} twice.",
                r.height
            )));
        }
    }
    Ok(())
}

pub fn plan(plan: &Plan) -> Result<(), Invalid> {
    let PlanLimits {
        max_stations,
        max_mounts_per_station,
        allowed_formats,
        max_bitrate_kbps,
        max_listeners_per_station,
        storage_bytes,
        max_live_streams,
        live_renditions,
        attachment_bytes,
        max_realtime_connections,
    } = &plan.limits;
    renditions(live_renditions)?;
    for (field, v) in [
        ("limits.max_stations", max_stations),
        ("limits.max_mounts_per_station", max_mounts_per_station),
        (
            "limits.max_listeners_per_station",
            max_listeners_per_station,
        ),
        ("limits.max_live_streams", max_live_streams),
        ("limits.max_realtime_connections", max_realtime_connections),
    ] {
        if *v > MAX_COUNT {
            return Err(Invalid::Value(format!(
                "{field} is {v}; at most {MAX_COUNT} is accepted."
            )));
        }
    }
    if !(8..=1024).contains(max_bitrate_kbps) {
        return Err(Invalid::Value(format!(
            "limits.max_bitrate_kbps must be between 8 and 1024, got {max_bitrate_kbps}."
        )));
    }
    if allowed_formats.is_empty() {
        return Err(Invalid::Value(
            "limits.allowed_formats must name at least one format.".to_string(),
        ));
    }
    let PlanPrices {
        currency: cur,
        monthly_micros,
        overage_per_gb_micros,
        overage_per_listener_hour_micros,
        included_gb,
        included_listener_hours,
        included_connection_minutes,
        overage_per_1000_connection_minutes_micros,
        included_messages,
        overage_per_1000_messages_micros,
        included_transactions,
        overage_per_1000_transactions_micros,
        included_call_minutes,
        overage_per_1000_call_minutes_micros,
        included_turn_gb,
        overage_per_turn_gb_micros,
    } = &plan.prices;
    currency(cur)?;
    // Allowances are multiplied by 10^9 bytes, 3.6 million ms or 60 000 ms when billed; this
    // bound keeps those products inside a signed 64-bit column.
    const MAX_ALLOWANCE: u64 = 1_000_000_000;
    for (field, v) in [
        ("prices.included_gb", included_gb),
        ("prices.included_listener_hours", included_listener_hours),
        (
            "prices.included_connection_minutes",
            included_connection_minutes,
        ),
        ("prices.included_messages", included_messages),
        ("prices.included_transactions", included_transactions),
        ("prices.included_call_minutes", included_call_minutes),
        ("prices.included_turn_gb", included_turn_gb),
    ] {
        if *v > MAX_ALLOWANCE {
            return Err(Invalid::Value(format!(
                "{field} is {v}; at most {MAX_ALLOWANCE} is accepted."
            )));
        }
    }
    for v in [
        storage_bytes,
        attachment_bytes,
        monthly_micros,
        overage_per_gb_micros,
        overage_per_listener_hour_micros,
        overage_per_1000_connection_minutes_micros,
        overage_per_1000_messages_micros,
        overage_per_1000_transactions_micros,
        overage_per_1000_call_minutes_micros,
        overage_per_turn_gb_micros,
    ] {
        if *v > MAX_BIG {
            return Err(Invalid::Value(format!(
                "{v} is larger than {MAX_BIG}, the largest amount accepted."
            )));
        }
    }
    Ok(())
}

fn mount_path(path: &str) -> bool {
    path.len() >= 2
        && path.len() <= 64
        && path.starts_with('/')
        && path[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !path[1..].starts_with('.')
}

/// Checks a station's mounts and settings against input rules and the tenant's plan. The
/// station count limit is checked separately, under the tenant's lock.
pub fn station(
    plan: &Plan,
    mounts: &[Mount],
    max_listeners: u32,
    autodj_enabled: bool,
) -> Result<(), Invalid> {
    let limits = &plan.limits;
    if mounts.is_empty() {
        return Err(Invalid::Value(
            "A station needs at least one mount.".to_string(),
        ));
    }
    if mounts.len() > limits.max_mounts_per_station as usize {
        return Err(Invalid::PlanLimit {
            limit: "max_mounts_per_station",
            detail: format!(
                "Plan {:?} allows {} mount(s) per station; {} were given.",
                plan.name,
                limits.max_mounts_per_station,
                mounts.len()
            ),
        });
    }
    let mut seen = HashSet::new();
    for m in mounts {
        if !mount_path(&m.path) {
            return Err(Invalid::Value(format!(
                "Mount path {:?} must be '/' followed by 1 to 63 letters, digits, '.', '_' or '-'.",
                m.path
            )));
        }
        if !seen.insert(m.path.as_str()) {
            return Err(Invalid::Value(format!(
                "Mount path {:?} appears twice.",
                m.path
            )));
        }
        if !limits.allowed_formats.contains(&m.format) {
            return Err(Invalid::PlanLimit {
                limit: "allowed_formats",
                detail: format!(
                    "Plan {:?} does not include {} mounts (allowed: {}).",
                    plan.name,
                    m.format.as_str(),
                    limits
                        .allowed_formats
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if m.bitrate_kbps < 8 {
            return Err(Invalid::Value(format!(
                "Mount {:?}: bitrate_kbps must be at least 8.",
                m.path
            )));
        }
        if m.bitrate_kbps > limits.max_bitrate_kbps {
            return Err(Invalid::PlanLimit {
                limit: "max_bitrate_kbps",
                detail: format!(
                    "Plan {:?} allows mounts up to {} kbps; mount {:?} asks for {} kbps.",
                    plan.name, limits.max_bitrate_kbps, m.path, m.bitrate_kbps
                ),
            });
        }
    }
    if max_listeners > limits.max_listeners_per_station {
        return Err(Invalid::PlanLimit {
            limit: "max_listeners_per_station",
            detail: format!(
                "Plan {:?} allows {} listeners per station; {} were asked for.",
                plan.name, limits.max_listeners_per_station, max_listeners
            ),
        });
    }
    if autodj_enabled && !plan.features.autodj {
        return Err(Invalid::PlanLimit {
            limit: "features.autodj",
            detail: format!("Plan {:?} does not include the AutoDJ.", plan.name),
        });
    }
    Ok(())
}

fn label_token(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A region name: empty (any), or up to 63 letters, digits, '.', '_', '-'.
pub fn region(field: &str, value: &str) -> Result<String, Invalid> {
    if value.is_empty() || label_token(value) {
        Ok(value.to_string())
    } else {
        Err(Invalid::Value(format!(
            "{field} must be empty or up to 63 letters, digits, '.', '_' or '-'."
        )))
    }
}

/// Node labels: at most 16, keys and values of up to 63 letters, digits, '.', '_', '-'.
pub fn labels(
    field: &str,
    value: &std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, Invalid> {
    if value.len() > 16 {
        return Err(Invalid::Value(format!(
            "{field} has {} labels; at most 16 are allowed.",
            value.len()
        )));
    }
    for (k, v) in value {
        if !label_token(k) || !label_token(v) {
            return Err(Invalid::Value(format!(
                "{field}: labels need keys and values of 1 to 63 letters, digits, '.', '_' or '-'."
            )));
        }
    }
    Ok(value.clone())
}

/// Longest media file name kept, in characters.
pub const MAX_FILENAME: usize = 255;
/// Longest artist, title or album, in characters.
pub const MAX_TAG: usize = 500;

/// An uploaded file's name (`?filename=`): its last path component (a browser or script may
/// send a whole path), trimmed, 1 to 255 characters, no control characters.
pub fn media_filename(value: Option<&str>) -> Result<String, Invalid> {
    let raw = value.unwrap_or_default();
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if base.is_empty() || base == "." || base == ".." {
        return Err(Invalid::Request(
            "Name the uploaded file in the query string, e.g. ?filename=song.mp3.".to_string(),
        ));
    }
    if base.chars().count() > MAX_FILENAME || base.chars().any(char::is_control) {
        return Err(Invalid::Request(format!(
            "filename must be at most {MAX_FILENAME} characters without control characters."
        )));
    }
    Ok(base.to_string())
}

/// An artist, title or album edited through the API: trimmed, at most 500 characters, no
/// control characters; empty clears it.
pub fn tag(field: &str, value: &str) -> Result<String, Invalid> {
    if value.chars().any(char::is_control) {
        return Err(Invalid::Value(format!(
            "{field} must not contain control characters."
        )));
    }
    let v = value.trim();
    if v.chars().count() > MAX_TAG {
        return Err(Invalid::Value(format!(
            "{field} is longer than {MAX_TAG} characters."
        )));
    }
    Ok(v.to_string())
}

/// A station's song request settings: their ranges, and the plan's feature when they are on.
pub fn requests(plan: &Plan, settings: &RequestSettings) -> Result<(), Invalid> {
    crate::requests::validate(settings).map_err(Invalid::Value)?;
    if settings.enabled && !plan.features.requests {
        return Err(Invalid::PlanLimit {
            limit: "features.requests",
            detail: format!(
                "Plan {:?} does not include song requests (plan feature requests).",
                plan.name
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use onda_shared::api::{AudioFormat, PlanFeatures};

    #[test]
    fn media_filenames_and_tags() {
        assert_eq!(
            media_filename(Some("song.mp3")).ok(),
            Some("song.mp3".into())
        );
        assert_eq!(
            media_filename(Some("C:\\Music\\a b.flac")).ok(),
            Some("a b.flac".into())
        );
        assert_eq!(
            media_filename(Some("/tmp/../x.mp3")).ok(),
            Some("x.mp3".into())
        );
        for bad in [None, Some(""), Some("dir/"), Some(".."), Some("a\u{7}.mp3")] {
            assert!(media_filename(bad).is_err(), "{bad:?}");
        }
        assert!(media_filename(Some(&"x".repeat(256))).is_err());
        assert_eq!(tag("artist", "  Björk ").ok(), Some("Björk".into()));
        assert!(tag("artist", "a\u{0}b").is_err());
        assert!(tag("album", &"x".repeat(501)).is_err());
    }

    fn basic() -> Plan {
        Plan {
            id: "p".into(),
            name: "Basic".into(),
            description: String::new(),
            limits: PlanLimits {
                max_stations: 1,
                max_mounts_per_station: 1,
                allowed_formats: vec![AudioFormat::Mp3],
                max_bitrate_kbps: 64,
                max_listeners_per_station: 50,
                storage_bytes: 1,
                max_live_streams: 0,
                live_renditions: Vec::new(),
                attachment_bytes: 1,
                max_realtime_connections: 10,
            },
            features: PlanFeatures::default(),
            prices: PlanPrices {
                currency: "USD".into(),
                monthly_micros: 1,
                overage_per_gb_micros: 1,
                overage_per_listener_hour_micros: 1,
                included_gb: 1,
                included_listener_hours: 1,
                included_connection_minutes: 1,
                overage_per_1000_connection_minutes_micros: 1,
                included_messages: 1,
                overage_per_1000_messages_micros: 1,
                included_transactions: 1,
                overage_per_1000_transactions_micros: 1,
                included_call_minutes: 1,
                overage_per_1000_call_minutes_micros: 1,
                included_turn_gb: 1,
                overage_per_turn_gb_micros: 1,
            },
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn mount(path: &str, format: AudioFormat, kbps: u32) -> Mount {
        Mount {
            path: path.into(),
            format,
            bitrate_kbps: kbps,
        }
    }

    fn limit_of(r: Result<(), Invalid>) -> &'static str {
        match r {
            Err(Invalid::PlanLimit { limit, .. }) => limit,
            other => panic!("expected a plan limit, got {other:?}"),
        }
    }

    #[test]
    fn station_limits_name_the_limit() {
        let p = basic();
        let ok = [mount("/live", AudioFormat::Mp3, 64)];
        assert!(station(&p, &ok, 50, false).is_ok());
        assert_eq!(
            limit_of(station(&p, &[mount("/a", AudioFormat::Mp3, 65)], 50, false)),
            "max_bitrate_kbps"
        );
        assert_eq!(
            limit_of(station(
                &p,
                &[mount("/a", AudioFormat::Opus, 64)],
                50,
                false
            )),
            "allowed_formats"
        );
        assert_eq!(
            limit_of(station(
                &p,
                &[
                    mount("/a", AudioFormat::Mp3, 64),
                    mount("/b", AudioFormat::Mp3, 64)
                ],
                50,
                false
            )),
            "max_mounts_per_station"
        );
        assert_eq!(
            limit_of(station(&p, &ok, 51, false)),
            "max_listeners_per_station"
        );
        assert_eq!(limit_of(station(&p, &ok, 50, true)), "features.autodj");
    }

    #[test]
    fn mount_paths() {
        for good in ["/live", "/radio.mp3", "/a_b-c"] {
            assert!(mount_path(good), "{good}");
        }
        for bad in [
            "",
            "/",
            "live",
            "/a/b",
            "/../x",
            "/a b",
            "/.hidden",
            &format!("/{}", "a".repeat(64)),
        ] {
            assert!(!mount_path(bad), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug_from_name("Radio Ñu 101!").as_deref(),
            Some("radio-u-101")
        );
        assert_eq!(slug_from_name("!!"), None);
        assert!(slug("ok-slug").is_ok());
        assert!(slug("-bad").is_err());
        assert!(slug("Bad").is_err());
        assert!(slug("a").is_err());
        // Reserved segments are whole segments: "administration-radio" is not "admin".
        assert!(station_slug("administration-radio").is_ok());
        for reserved in ["admin", "hls"] {
            let Err(Invalid::Value(why)) = station_slug(reserved) else {
                panic!("{reserved} is reserved");
            };
            assert!(why.contains("/admin") && why.ends_with('.'), "{why}");
        }
        assert!(stream_slug("hls").is_ok());
        let m = |p: &str| Mount {
            path: p.to_string(),
            format: AudioFormat::Mp3,
            bitrate_kbps: 64,
        };
        assert!(edge_paths("administration-radio", &[m("/x.mp3")]).is_ok());
        assert!(edge_paths("hls", &[m("/x.mp3")]).is_err());
    }

    #[test]
    fn names_and_emails() {
        assert!(name("name", "  ").is_err());
        assert!(name("name", &"x".repeat(101)).is_err());
        assert_eq!(name("name", " A ").expect("ok"), "A");
        assert!(email("a@b.c").is_ok());
        assert!(email("").is_ok());
        assert!(email("nope").is_err());
        assert!(currency("usd").is_err());
    }
}

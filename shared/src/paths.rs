//! Which paths and names a station or a live stream may take on an edge node: one rule, used by
//! the panel API (which refuses what an edge would refuse, with [`RULE`] in its answer), by the
//! edge's configuration check (its defence in depth) and by the control plane's leader (which
//! picks free paths for what it generates, such as a station's live DJ mount).
//!
//! An edge answers some paths itself: everything under the segments in [`RESERVED_SEGMENTS`]
//! (`/admin`, `/admin/…`, `/hls/…`, `/hls-audio/…`) and the exact paths in [`RESERVED_PATHS`]. Reserved prefixes
//! are whole path segments: `/administration-radio/x.mp3` is a mount, `/admin/x` is not.

/// First path segments the edge serves itself: its admin routes, live streams' HLS and the
/// mounts' audio HLS (`/hls-audio{mount}/index.m3u8`).
pub const RESERVED_SEGMENTS: &[&str] = &["admin", "hls", "hls-audio"];

/// Whole paths the edge serves itself.
pub const RESERVED_PATHS: &[&str] = &["/status-json.xsl", "/metrics", "/healthz", "/readyz"];

/// The rule in one sentence, for error messages.
pub const RULE: &str = "an edge node answers /admin and /admin/…, /hls/… (live streams), \
     /hls-audio/… (mounts as HLS), /status-json.xsl, /metrics, /healthz and /readyz itself, so \
     no mount may be one of these paths or lie under the segments admin, hls or hls-audio (a \
     station's mounts lie under its slug, so the slugs admin, hls and hls-audio are taken)";

/// Longest edge path (station slug and mount path together).
pub const MAX_EDGE_PATH: usize = 128;

/// Why an edge path cannot be a mount, or `None` when it can.
pub fn reserved(path: &str) -> Option<String> {
    let first = path
        .strip_prefix('/')
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if RESERVED_SEGMENTS.contains(&first) || RESERVED_PATHS.contains(&path) {
        return Some(format!("path {path:?} is reserved: {RULE}"));
    }
    None
}

/// Checks a path an edge serves a mount at (`/slug/radio.mp3`, or any path of a standalone
/// edge): its syntax and [`reserved`].
pub fn check_edge_path(path: &str) -> Result<(), String> {
    let syntax = path.len() >= 2
        && path.len() <= MAX_EDGE_PATH
        && path.starts_with('/')
        && !path.contains("//")
        && !path.contains("/.")
        && path[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if !syntax {
        return Err(format!(
            "path {path:?} must be '/' and then up to {} letters, digits, '.', '_', '-' or '/' \
             (no empty segment, no segment starting with '.')",
            MAX_EDGE_PATH - 1
        ));
    }
    match reserved(path) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Checks a station's slug: the first segment of every edge path of the station, so it must not
/// be a reserved segment. (Its syntax is the panel API's slug rule.)
pub fn check_station_slug(slug: &str) -> Result<(), String> {
    if RESERVED_SEGMENTS.contains(&slug) {
        return Err(format!("slug {slug:?} is reserved: {RULE}"));
    }
    Ok(())
}

/// Checks a live stream's name (`/hls/{name}/…`): 1 to 64 letters, digits, '_' or '-'.
pub fn check_live_stream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "live stream name {name:?} must be 1 to 64 letters, digits, '_' or '-'"
        ))
    }
}

/// The mount path live DJs of a station connect to: `/live`, or when the station has a mount of
/// that path, the first of `/live-dj`, `/live-dj-2`, `/live-dj-3`, … that is none of its mounts.
pub fn live_mount<'a>(mounts: impl IntoIterator<Item = &'a str> + Clone) -> String {
    let taken = |p: &str| mounts.clone().into_iter().any(|m| m == p);
    if !taken("/live") {
        return "/live".to_string();
    }
    let mut candidate = "/live-dj".to_string();
    let mut n = 1u32;
    while taken(&candidate) {
        n += 1;
        candidate = format!("/live-dj-{n}");
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_prefixes_are_whole_segments() {
        for ok in [
            "/administration-radio/x.mp3",
            "/adminx",
            "/hlsradio/a.mp3",
            "/radio/admin",
            "/radio/hls/x",
            "/metrics.mp3",
            "/healthz/x",
        ] {
            assert_eq!(check_edge_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/admin",
            "/admin/",
            "/admin/x",
            "/admin/stats",
            "/hls",
            "/hls/demo-live/x.mp3",
            "/hls-audio/demo/radio.mp3",
            "/status-json.xsl",
            "/metrics",
            "/healthz",
            "/readyz",
        ] {
            let err = check_edge_path(bad).expect_err(bad);
            assert!(err.contains("reserved") || err.contains("segment"), "{err}");
        }
        assert!(check_station_slug("hls").is_err());
        assert!(check_station_slug("admin").is_err());
        assert!(check_station_slug("hls-audio").is_err());
        assert!(check_station_slug("administration-radio").is_ok());
    }

    #[test]
    fn edge_path_syntax() {
        for bad in ["", "/", "x", "//a", "/a//b", "/.x", "/a/.b", "/a b", "/a?b"] {
            assert!(check_edge_path(bad).is_err(), "{bad}");
        }
        assert!(check_edge_path(&format!("/{}", "a".repeat(MAX_EDGE_PATH))).is_err());
        assert!(check_edge_path(&format!("/{}", "a".repeat(MAX_EDGE_PATH - 1))).is_ok());
    }

    #[test]
    fn the_live_mount_is_free() {
        assert_eq!(live_mount(["/radio.mp3"]), "/live");
        assert_eq!(live_mount(["/live", "/a"]), "/live-dj");
        assert_eq!(live_mount(["/live", "/live-dj"]), "/live-dj-2");
        assert_eq!(
            live_mount(["/live-dj-2", "/live", "/live-dj"]),
            "/live-dj-3"
        );
        assert_eq!(live_mount(["/live-dj"]), "/live");
    }

    #[test]
    fn live_stream_names() {
        assert!(check_live_stream_name("demo-live").is_ok());
        assert!(check_live_stream_name("").is_err());
        assert!(check_live_stream_name("a/b").is_err());
        assert!(check_live_stream_name(&"a".repeat(65)).is_err());
    }
}

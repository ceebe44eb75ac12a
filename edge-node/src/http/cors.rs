//! CORS for web players on other origins: the one place that says which headers every answer of
//! the edge carries (any origin may read it, and the `icy-*` headers a player shows), and what a
//! preflight allows (the `Icy-MetaData` request header that asks for titles). Icecast 2.4.4 sends
//! only `Access-Control-Allow-Origin: *` and no preflight answer at all.

/// On every answer: the reply head of a listener, HLS playlists and segments, status, errors.
pub(crate) const RESPONSE: &[(&str, &str)] = &[
    ("Access-Control-Allow-Origin", "*"),
    (
        "Access-Control-Expose-Headers",
        "icy-br, icy-description, icy-genre, icy-metaint, icy-name, icy-pub, icy-url, ice-audio-info",
    ),
];

/// Added to [`RESPONSE`] on the answer to a preflight (`OPTIONS`).
pub(crate) const PREFLIGHT: &[(&str, &str)] = &[
    ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Origin, Accept, X-Requested-With, Content-Type, Icy-MetaData, Range",
    ),
    ("Access-Control-Max-Age", "86400"),
];

/// Appends `headers` to a response head as `Name: value` lines.
pub(crate) fn push_lines(head: &mut String, headers: &[(&str, &str)]) {
    for (k, v) in headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
}

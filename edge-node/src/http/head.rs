//! Request heads as Icecast's clients send them: HTTP/1.0 and 1.1 plus the `SOURCE` method and
//! the `ICE/1.0` version, parsed by httparse under our limits on size and header count. Pure code
//! over bytes: no I/O, no panics on any input.

use std::fmt;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    pub method: String,
    /// Percent-decoded path without the query.
    pub path: String,
    /// Raw query string (without '?').
    pub query: String,
    /// 0 for HTTP/1.0 and ICE/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// The head is longer than allowed.
    TooLarge,
    /// More header lines than allowed.
    TooManyHeaders,
    /// Not an HTTP request head; the text says what was wrong.
    Malformed(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("request head too large"),
            HeadError::TooManyHeaders => f.write_str("too many header lines"),
            HeadError::Malformed(m) => write!(f, "malformed request: {m}"),
        }
    }
}

impl RequestHead {
    /// The first value of a header, by case-insensitive name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Query parameters, percent- and plus-decoded.
    pub(crate) fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete (read more, unless `buf` already holds
/// `max_bytes`), or the head and the number of bytes it used (the body starts after).
pub(crate) fn parse(
    buf: &[u8],
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // httparse knows only HTTP/1.x; Icecast also accepts `SOURCE /m ICE/1.0`.
    let rewritten;
    let buf = match find_line_end(buf) {
        Some(end) if buf[..end].ends_with(b" ICE/1.0") => {
            let mut v = Vec::with_capacity(buf.len());
            v.extend_from_slice(&buf[..end - 7]);
            v.extend_from_slice(b"HTTP/1.0");
            v.extend_from_slice(&buf[end..]);
            rewritten = v;
            &rewritten[..]
        }
        _ => buf,
    };
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => {
            return Err(if buf.len() > max_bytes {
                HeadError::TooLarge
            } else {
                HeadError::Malformed(e.to_string())
            });
        }
    };
    let used = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() >= max_bytes => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if used > max_bytes {
        return Err(HeadError::TooLarge);
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    // Absolute-form targets ("http://host/m") are accepted as their path.
    let raw_path = match raw_path.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => raw_path,
    };
    if !raw_path.starts_with('/') {
        return Err(HeadError::Malformed(format!(
            "request target {target:?} is not a path"
        )));
    }
    let path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| HeadError::Malformed("path is not UTF-8".to_string()))?
        .into_owned();
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    // Our rewrite shortened nothing: ICE/1.0 and HTTP/1.0 have the same length.
    Ok(Some((
        RequestHead {
            method,
            path,
            query: query.to_string(),
            minor_version: req.version.unwrap_or(0),
            headers,
        },
        used,
    )))
}

fn find_line_end(buf: &[u8]) -> Option<usize> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    Some(if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    })
}

/// The `(user, password)` of a `Basic` Authorization header.
pub(crate) fn basic_auth(head: &RequestHead) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = head.header("authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse(s.as_bytes(), 8192, 32)
    }

    #[test]
    fn ffmpeg_put() {
        let raw = "PUT /live HTTP/1.1\r\nAuthorization: Basic c291cmNlOmhhY2ttZQ==\r\nExpect: 100-continue\r\nContent-Type: audio/mpeg\r\nIce-Name: My%20Radio\r\n\r\nBODY";
        let (h, used) = p(raw).expect("ok").expect("complete");
        assert_eq!(h.method, "PUT");
        assert_eq!(h.path, "/live");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.header("content-type"), Some("audio/mpeg"));
        assert_eq!(&raw[used..], "BODY");
        assert_eq!(basic_auth(&h), Some(("source".into(), "hackme".into())));
    }

    #[test]
    fn legacy_source_and_ice_version() {
        let (h, _) = p("SOURCE /m ICE/1.0\r\nice-name: x\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!((h.method.as_str(), h.minor_version), ("SOURCE", 0));
        let (h, _) = p("SOURCE /m HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.path, "/m");
    }

    #[test]
    fn query_and_decoding() {
        let (h, _) = p(
            "GET /admin/metadata?mount=%2Flive&mode=updinfo&song=A+%26+B%20-%20C HTTP/1.0\r\n\r\n",
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.path, "/admin/metadata");
        assert_eq!(h.query_param("mount").as_deref(), Some("/live"));
        assert_eq!(h.query_param("song").as_deref(), Some("A & B - C"));
        let (h, _) = p("GET /a%20b HTTP/1.1\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.path, "/a b");
    }

    #[test]
    fn limits_and_partial() {
        assert_eq!(p("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(p(&big), Err(HeadError::TooLarge));
        let partial_big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert_eq!(p(&partial_big), Err(HeadError::TooLarge));
        let many: String = (0..40).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            p(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(HeadError::TooManyHeaders)
        );
        assert!(matches!(
            p("\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            p("GET nopath HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn basic_auth_variants() {
        let head = |v: &str| RequestHead {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            minor_version: 1,
            headers: vec![("Authorization".into(), v.into())],
        };
        assert_eq!(
            basic_auth(&head("Basic YTpiOmM=")),
            Some(("a".into(), "b:c".into()))
        );
        assert_eq!(basic_auth(&head("Bearer x")), None);
        assert_eq!(basic_auth(&head("Basic !!!")), None);
        assert_eq!(basic_auth(&head("Basic")), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz over many shapes of input (the property: no panic, and a
        // complete parse never claims more bytes than it was given).
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let alphabet = b"GETPOSUC /?%:\r\n\x00\xffHTP1.0ICE";
        for len in 0..400 {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                if let Ok(Some((_, used))) = parse(&bytes, 256, 8) {
                    assert!(used <= bytes.len());
                }
            }
        }
    }
}

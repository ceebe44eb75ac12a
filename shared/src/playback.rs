//! Signed playback tokens of live streams: the control plane signs, the edge checks, with the
//! stream's playback secret, so a viewer's every playlist and segment request is checked on the
//! edge without a round trip.
//!
//! A token is `{expiry}.{viewer}.{signature}`: the expiry in unix seconds, an optional viewer id
//! (letters, digits, `_`, `-`; at most 64) the tenant's site chose, and the first 128 bits of
//! HMAC-SHA256 over the stream's slug, the expiry and the viewer, in hex. Everything in it is
//! URL-safe, so it travels as `?token=` in the playlist URIs.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this stream needs a playback token (?token=…)")]
    Missing,
    #[error("the playback token is malformed")]
    Malformed,
    #[error("the playback token has expired")]
    Expired,
    #[error("the playback token is not valid for this stream")]
    Forged,
}

/// The longest viewer id a token carries.
pub const MAX_VIEWER: usize = 64;

pub fn valid_viewer(viewer: &str) -> bool {
    viewer.len() <= MAX_VIEWER
        && viewer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn signature(secret: &str, stream: &str, expiry: u64, viewer: &str) -> String {
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"onda-playback\0");
    mac.update(stream.as_bytes());
    mac.update(b"\0");
    mac.update(expiry.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(viewer.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// A token for `stream` (its slug) valid until `expiry` (unix seconds) for `viewer`, which the
/// caller has checked with [`valid_viewer`].
pub fn sign(secret: &str, stream: &str, expiry: u64, viewer: &str) -> String {
    format!(
        "{expiry}.{viewer}.{}",
        signature(secret, stream, expiry, viewer)
    )
}

/// Checks a token at `now` (unix seconds); returns its viewer id.
pub fn verify<'a>(
    secret: &str,
    stream: &str,
    token: &'a str,
    now: u64,
) -> Result<&'a str, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let mut parts = token.splitn(3, '.');
    let (Some(expiry), Some(viewer), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    if !valid_viewer(viewer) || sig.len() != 32 {
        return Err(TokenError::Malformed);
    }
    let expected = signature(secret, stream, expiry, viewer);
    let same = expected.len() == sig.len()
        && expected
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(TokenError::Forged);
    }
    if now >= expiry {
        return Err(TokenError::Expired);
    }
    Ok(viewer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_not_for_another_stream_or_secret() {
        let t = sign("secret", "show", 1000, "buyer-42");
        assert_eq!(verify("secret", "show", &t, 999), Ok("buyer-42"));
        assert_eq!(verify("secret", "show", &t, 1000), Err(TokenError::Expired));
        assert_eq!(verify("secret", "other", &t, 999), Err(TokenError::Forged));
        assert_eq!(verify("another", "show", &t, 999), Err(TokenError::Forged));
        // A later expiry or another viewer breaks the signature.
        let sig = t.rsplit('.').next().expect("sig");
        assert_eq!(
            verify("secret", "show", &format!("2000.buyer-42.{sig}"), 999),
            Err(TokenError::Forged)
        );
        assert_eq!(
            verify("secret", "show", &format!("1000.buyer-43.{sig}"), 999),
            Err(TokenError::Forged)
        );
        assert_eq!(verify("secret", "show", "", 0), Err(TokenError::Missing));
        for bad in ["x", "1.2", "a.b.c", "1.bad viewer.00", "1..short"] {
            assert_eq!(
                verify("secret", "show", bad, 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        let anonymous = sign("secret", "show", 1000, "");
        assert_eq!(verify("secret", "show", &anonymous, 5), Ok(""));
    }
}

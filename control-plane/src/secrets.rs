//! Random identifiers and secrets, and how API key secrets are stored.
//!
//! API keys are 256-bit random values, so a single SHA-256 digest is a safe store for them (no
//! dictionary to guess from); a slow password hash would only add latency to every request.

use sha2::{Digest as _, Sha256};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALPHABET_MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters drawn from `alphabet` with the thread-local CSPRNG.
fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(alphabet[rand::random_range(0..alphabet.len())]))
        .collect()
}

/// A new object id such as `stn_k3v9...` (16 random characters: 82 bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_string(ALPHABET, 16))
}

/// A new id that sorts by time: `prefix_`, the time `ms` in 12 hex digits, then 10 random
/// characters (keyset pages ordered by id come out in time order).
pub fn new_time_id(prefix: &str, ms: i64) -> String {
    format!("{prefix}_{ms:012x}{}", random_string(ALPHABET, 10))
}

/// A new API key secret: `onda_` and 43 base62 characters (256 bits).
pub fn new_api_key() -> String {
    format!("onda_{}", random_string(ALPHABET_MIXED, 43))
}

/// The part of a secret shown in listings.
pub fn key_prefix(secret: &str) -> String {
    secret.chars().take(12).collect()
}

/// A message attachment's id, which is also the capability to fetch it: `att_` and 32 base62
/// characters (190 bits).
pub fn new_attachment_id() -> String {
    format!("att_{}", random_string(ALPHABET_MIXED, 32))
}

/// True for an id [`new_attachment_id`] could have made.
pub fn is_attachment_id(id: &str) -> bool {
    id.strip_prefix("att_")
        .is_some_and(|r| r.len() == 32 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A password for Icecast source clients: 20 base62 characters (119 bits), nothing that needs
/// escaping in a URL or a config file.
pub fn new_password() -> String {
    random_string(ALPHABET_MIXED, 20)
}

/// An RTMP stream key: `live_` and 32 base62 characters (190 bits), safe in an RTMP URL.
pub fn new_stream_key() -> String {
    format!("live_{}", random_string(ALPHABET_MIXED, 32))
}

/// The secret a token stream's playback tokens are signed with (256 bits).
pub fn new_playback_secret() -> String {
    random_string(ALPHABET_MIXED, 43)
}

/// The secret of a user-token signing key (256 bits): the HMAC key is these characters.
pub fn new_signing_secret() -> String {
    random_string(ALPHABET_MIXED, 43)
}

/// An admin token for dev mode.
pub fn new_admin_token() -> String {
    format!("onda_admin_{}", random_string(ALPHABET_MIXED, 40))
}

pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub use onda_shared::secret::constant_time_eq;

/// An Argon2id hash (PHC string) of a human-chosen password, with a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ids_sort_by_time() {
        let (a, b) = (
            new_time_id("ntf", 1_700_000_000_000),
            new_time_id("ntf", 1_700_000_000_001),
        );
        assert!(a < b, "{a} < {b}");
        assert!(a.starts_with("ntf_") && a.len() == 4 + 12 + 10);
        let (a, b) = (new_time_id("evt", 1_000), new_time_id("evt", 2_000));
        assert!(a.starts_with("evt_") && a < b, "{a} {b}");
    }

    #[test]
    fn shapes() {
        let k = new_api_key();
        assert_eq!(k.len(), 48);
        assert!(k.starts_with("onda_"));
        assert_ne!(k, new_api_key());
        assert_eq!(key_prefix(&k).len(), 12);
        assert!(new_id("stn").starts_with("stn_"));
        assert_eq!(sha256_hex("abc").len(), 64);
    }
}

//! Join tokens: `onda1.<id>.<secret>.<ca-sha256>`. The id finds the token, the secret proves it
//! (the control plane stores only its SHA-256), and the CA fingerprint lets a joining node trust
//! the control plane before it has any certificate, as kubeadm's discovery hash does.

use std::fmt;

const PREFIX: &str = "onda1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    /// SHA-256 of the cluster CA certificate (DER), lowercase hex.
    pub ca_sha256: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("this is not an Onda join token (expected onda1.<id>.<secret>.<ca-sha256>)")]
    Shape,
    #[error("the join token's CA fingerprint is not 64 hexadecimal digits")]
    Fingerprint,
    #[error("the join token's id or secret has characters other than letters and digits")]
    Charset,
}

impl std::str::FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [prefix, id, secret, ca] = parts[..] else {
            return Err(TokenError::Shape);
        };
        if prefix != PREFIX || id.is_empty() || secret.is_empty() {
            return Err(TokenError::Shape);
        }
        let alnum = |t: &str| t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !alnum(id) || !alnum(secret) {
            return Err(TokenError::Charset);
        }
        if ca.len() != 64 || !ca.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Fingerprint);
        }
        Ok(JoinToken {
            id: id.to_string(),
            secret: secret.to_string(),
            ca_sha256: ca.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}.{}", self.id, self.secret, self.ca_sha256)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let t = JoinToken {
            id: "jt_abc".into(),
            secret: "S3cret".into(),
            ca_sha256: "ab".repeat(32),
        };
        assert_eq!(t.to_string().parse::<JoinToken>().unwrap(), t);
        assert_eq!("hello".parse::<JoinToken>(), Err(TokenError::Shape));
        assert_eq!(
            format!("onda1.a.b.{}", "z".repeat(64)).parse::<JoinToken>(),
            Err(TokenError::Fingerprint)
        );
        assert_eq!(
            format!("onda1.a-.b.{}", "a".repeat(64)).parse::<JoinToken>(),
            Err(TokenError::Charset)
        );
        assert_eq!(
            format!("onda2.a.b.{}", "a".repeat(64)).parse::<JoinToken>(),
            Err(TokenError::Shape)
        );
    }
}

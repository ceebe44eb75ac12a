//! HS256 JSON Web Tokens (RFC 7519, JWS compact form) as end users carry them: parse, check
//! the signature, check the time claims, and sign.
//!
//! Written here rather than with the `jsonwebtoken` crate: Onda accepts exactly one algorithm,
//! and that crate's releases need a crypto-provider feature that builds RSA, ECDSA and EdDSA (or
//! aws-lc) for algorithms we refuse anyway; HMAC-SHA256 and base64url are already in the tree,
//! and refusing `alg: none` and friends is simplest when nothing else exists. Interoperability
//! with a real JWT library is tested: the integration tests sign tokens with Node's
//! `jsonwebtoken` package, as tenants' backends do.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use serde_json::{Map, Value};
use sha2::Sha256;

/// The longest token accepted: far above what a header and these claims need, and small enough
/// that nobody makes the server decode megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated between the tenant's servers and Onda on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// Why a token is refused before anything is looked up about its user; each says why in a
/// sentence a tenant's developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("The user token is not a JWT: expected three base64url parts separated by dots ({0}).")]
    Malformed(String),
    #[error("The user token is signed with alg {0:?}; Onda accepts only HS256.")]
    Algorithm(String),
    #[error("The user token's header has no kid naming the signing key it was signed with.")]
    NoKid,
    #[error("The user token's signature does not match its signing key {0:?}.")]
    Signature(String),
    #[error("The user token's claims are not usable: {0}.")]
    Claims(String),
    #[error("The user token expired at {0} (unix seconds).")]
    Expired(i64),
    #[error("The user token is not valid before {0} (unix seconds).")]
    NotYetValid(i64),
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The tenant that issued it.
    pub iss: String,
    /// The tenant's own id of the user.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
}

/// A token whose header was read but whose signature is not checked yet: the `kid` says which
/// secret to check it with.
#[derive(Debug)]
pub struct Unverified<'a> {
    pub kid: String,
    signing_input: &'a str,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

fn part(name: &str, text: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwtError::Malformed(format!("the {name} is not unpadded base64url")))
}

fn object(name: &str, bytes: &[u8]) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(format!(
            "the {name} is not a JSON object"
        ))),
    }
}

/// Reads the header of `token`; the algorithm must be HS256 and a `kid` must name the key.
pub fn parse(token: &str) -> Result<Unverified<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed(format!(
            "it is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(format!(
            "it has {} parts",
            token.split('.').count()
        )));
    };
    let head = object("header", &part("header", header)?)?;
    match head.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        Some(Value::String(alg)) => return Err(JwtError::Algorithm(alg.clone())),
        _ => return Err(JwtError::Malformed("the header has no alg".to_string())),
    }
    // RFC 7515 §4.1.11: extensions a recipient does not understand must make it refuse.
    if head.contains_key("crit") {
        return Err(JwtError::Malformed(
            "the header lists critical extensions (crit), which Onda does not support".to_string(),
        ));
    }
    let kid = match head.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        _ => return Err(JwtError::NoKid),
    };
    Ok(Unverified {
        kid,
        signing_input: &token[..header.len() + 1 + payload.len()],
        signature: part("signature", signature)?,
        payload: part("payload", payload)?,
    })
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256>>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// A NumericDate claim: seconds, possibly with a fraction (RFC 7519 §2), as whole seconds.
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            // Whole seconds: a fraction only ever makes the token valid a moment longer.
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| JwtError::Claims(format!("{name} is not a number of seconds"))),
        Some(_) => Err(JwtError::Claims(format!(
            "{name} must be a number of seconds since 1970"
        ))),
    }
}

fn string(claims: &Map<String, Value>, name: &str, what: &str) -> Result<String, JwtError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(JwtError::Claims(format!("{name} ({what}) is missing"))),
    }
}

impl Unverified<'_> {
    /// Checks the signature with `secret`, then the claims at `now` (unix seconds).
    pub fn verify(self, secret: &[u8], now: i64) -> Result<Claims, JwtError> {
        let mut mac = mac(secret);
        mac.update(self.signing_input.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&self.signature)
            .map_err(|_| JwtError::Signature(self.kid.clone()))?;
        let claims = object("payload", &self.payload)?;
        let exp = seconds(&claims, "exp")?
            .ok_or_else(|| JwtError::Claims("exp (the expiry) is missing".to_string()))?;
        if now > exp.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::Expired(exp));
        }
        if let Some(nbf) = seconds(&claims, "nbf")?
            && now < nbf.saturating_sub(LEEWAY_SECS)
        {
            return Err(JwtError::NotYetValid(nbf));
        }
        Ok(Claims {
            iss: string(&claims, "iss", "the tenant id")?,
            sub: string(&claims, "sub", "the user id")?,
            exp,
        })
    }
}

/// Signs a token for `claims` with the key `kid` whose secret is `secret`, issued at `now`.
pub fn sign(kid: &str, secret: &[u8], claims: &Claims, now: i64) -> String {
    let header = serde_json::json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
    let payload = serde_json::json!({
        "iss": claims.iss, "sub": claims.sub, "iat": now, "exp": claims.exp,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let mut mac = mac(secret);
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "ten_a".to_string(),
            sub: "fan-1".to_string(),
            exp,
        }
    }

    fn check(token: &str, secret: &[u8]) -> Result<Claims, JwtError> {
        parse(token)?.verify(secret, NOW)
    }

    /// A token with the given header and payload JSON, signed with `secret`.
    fn forge(header: &Value, payload: &Value, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let mut m = mac(secret);
        m.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        )
    }

    #[test]
    fn a_signed_token_verifies_with_its_secret_only() {
        let token = sign("sk_1", b"secret", &claims(NOW + 60), NOW);
        assert_eq!(parse(&token).expect("accepted").kid, "sk_1");
        assert_eq!(
            check(&token, b"secret").expect("accepted"),
            claims(NOW + 60)
        );
        assert_eq!(
            check(&token, b"other").expect_err("refused"),
            JwtError::Signature("sk_1".to_string())
        );
    }

    /// The signature covers the payload: swapping in another user breaks it.
    #[test]
    fn a_tampered_payload_breaks_the_signature() {
        let token = sign("k", b"s", &claims(NOW + 60), NOW);
        let mut parts: Vec<&str> = token.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(r#"{"iss":"ten_a","sub":"admin","exp":1900000000}"#);
        parts[1] = &evil;
        assert!(matches!(
            check(&parts.join("."), b"s"),
            Err(JwtError::Signature(_))
        ));
    }

    #[test]
    fn only_hs256_is_accepted() {
        let payload = serde_json::json!({"iss": "t", "sub": "u", "exp": NOW + 60});
        for alg in ["none", "HS512", "RS256", "hs256"] {
            let header = serde_json::json!({"alg": alg, "kid": "k"});
            let token = forge(&header, &payload, b"s");
            assert_eq!(
                check(&token, b"s").expect_err("refused"),
                JwtError::Algorithm(alg.to_string())
            );
        }
        // The classic `alg: none` token with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        assert_eq!(
            check(&none, b"s").expect_err("refused"),
            JwtError::Algorithm("none".to_string())
        );
    }

    #[test]
    fn the_header_must_name_a_key_and_no_critical_extensions() {
        let payload = serde_json::json!({"iss": "t", "sub": "u", "exp": NOW + 60});
        let token = forge(&serde_json::json!({"alg": "HS256"}), &payload, b"s");
        assert_eq!(check(&token, b"s").expect_err("refused"), JwtError::NoKid);
        let token = forge(
            &serde_json::json!({"alg": "HS256", "kid": "k", "crit": ["exp"]}),
            &payload,
            b"s",
        );
        assert!(matches!(check(&token, b"s"), Err(JwtError::Malformed(m)) if m.contains("crit")));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        for (token, says) in [
            ("", "1 parts"),
            ("a.b", "2 parts"),
            ("a.b.c.d", "4 parts"),
            ("!!.e30.e30", "header is not unpadded base64url"),
            ("e30=.e30.e30", "header is not unpadded base64url"),
            ("WzFd.e30.e30", "header is not a JSON object"),
            ("e30.e30.e30", "header has no alg"),
        ] {
            match check(token, b"s") {
                Err(JwtError::Malformed(m)) => assert!(m.contains(says), "{token}: {m}"),
                other => panic!("{token}: {other:?}"),
            }
        }
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(check(&long, b"s"), Err(JwtError::Malformed(m)) if m.contains("longer")));
    }

    #[test]
    fn time_claims_are_checked_with_a_little_leeway() {
        let header = serde_json::json!({"alg": "HS256", "kid": "k"});
        let at = |payload: Value| check(&forge(&header, &payload, b"s"), b"s");
        let base = |exp: Value| serde_json::json!({"iss": "t", "sub": "u", "exp": exp});
        assert_eq!(
            at(base(Value::from(NOW - 3600))).expect_err("refused"),
            JwtError::Expired(NOW - 3600)
        );
        assert!(at(base(Value::from(NOW - LEEWAY_SECS))).is_ok());
        assert!(at(base(Value::from(NOW as f64 + 0.5))).is_ok());
        assert!(
            matches!(at(base(Value::from("soon"))), Err(JwtError::Claims(m)) if m.contains("exp"))
        );
        assert!(matches!(
            at(serde_json::json!({"iss": "t", "sub": "u"})),
            Err(JwtError::Claims(m)) if m.contains("exp")
        ));
        let early =
            serde_json::json!({"iss": "t", "sub": "u", "exp": NOW + 7200, "nbf": NOW + 3600});
        assert_eq!(
            at(early).expect_err("refused"),
            JwtError::NotYetValid(NOW + 3600)
        );
        let no_sub = serde_json::json!({"iss": "t", "exp": NOW + 60});
        assert!(matches!(at(no_sub), Err(JwtError::Claims(m)) if m.contains("sub")));
        let no_iss = serde_json::json!({"sub": "u", "exp": NOW + 60});
        assert!(matches!(at(no_iss), Err(JwtError::Claims(m)) if m.contains("iss")));
    }
}

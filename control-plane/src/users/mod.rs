//! End users: a tenant's own users (identified by the tenant's ids), the rules their profiles
//! follow, and the user tokens they act with. A user token acts only as its user, only inside
//! its tenant: [`authenticate`] is the one place that decides, for the API and the gateway.

pub mod jwt;

use crate::db::{self, Conn};
use crate::secrets;
use crate::validate::{self, Invalid};
use jwt::JwtError;
use onda_shared::api::{EndUser, PutUser, Tenant, TenantStatus, UserToken};
use serde_json::Value;

/// The longest user id a tenant may use.
pub const MAX_USER_ID: usize = 128;

/// The largest `metadata` object, serialized.
pub const MAX_METADATA_BYTES: usize = 4096;

/// The longest avatar URL.
pub const MAX_URL: usize = 2048;

/// How many of its own signing keys a tenant may have active at once (rotation needs two).
pub const MAX_ACTIVE_KEYS: i64 = 10;

/// Lifetimes of minted tokens, in seconds.
pub const DEFAULT_TOKEN_TTL: u32 = 3600;
pub const MIN_TOKEN_TTL: u32 = 60;
pub const MAX_TOKEN_TTL: u32 = 86_400;

/// A tenant's id for a user: 1 to 128 of `A-Z a-z 0-9 _ . : @ -`, so emails, UUIDs and
/// prefixed ids fit and nothing needs escaping in a path.
pub fn user_id(value: &str) -> Result<&str, Invalid> {
    let ok = (1..=MAX_USER_ID).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'));
    if ok {
        Ok(value)
    } else {
        Err(Invalid::Value(format!(
            "user id {:.140?} must be 1 to {MAX_USER_ID} of A-Z, a-z, 0-9, '_', '.', ':', '@' \
             and '-'.",
            value
        )))
    }
}

fn avatar_url(value: &str) -> Result<String, Invalid> {
    if value.len() > MAX_URL {
        return Err(Invalid::Value(format!(
            "avatar_url is longer than {MAX_URL} characters."
        )));
    }
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(u.to_string()),
        _ => Err(Invalid::Value(format!(
            "avatar_url {value:.80?} is not an http or https URL."
        ))),
    }
}

/// The profile `req` asks for `id`, checked; timestamps are left for the database.
pub fn profile(id: &str, req: PutUser) -> Result<EndUser, Invalid> {
    let display_name = match &req.display_name {
        Some(name) => validate::name("display_name", name)?,
        None => id.to_string(),
    };
    let avatar_url = req.avatar_url.as_deref().map(avatar_url).transpose()?;
    let metadata = req.metadata.unwrap_or_default();
    let size = Value::Object(metadata.clone()).to_string().len();
    if size > MAX_METADATA_BYTES {
        return Err(Invalid::Value(format!(
            "metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are kept."
        )));
    }
    let tip_minimum = req.tip_minimum.unwrap_or(1);
    if !(1..=crate::ledger::MAX_AMOUNT).contains(&tip_minimum) {
        return Err(Invalid::Value(format!(
            "tip_minimum = {tip_minimum} must be a whole number of minor units between 1 and {}.",
            crate::ledger::MAX_AMOUNT
        )));
    }
    let subscription_price = req
        .subscription_price
        .map(|p| subscription_price(req.creator, p))
        .transpose()?;
    let call_price_per_minute = req
        .call_price_per_minute
        .map(|p| call_price(req.creator, p))
        .transpose()?;
    if req.available_for_calls || req.calls_subscribers_only {
        creator_only(
            req.creator,
            "available_for_calls and calls_subscribers_only",
        )?;
    }
    let region = req.region.as_deref().map(region).transpose()?;
    Ok(EndUser {
        id: user_id(id)?.to_string(),
        display_name,
        avatar_url,
        creator: req.creator,
        tip_minimum,
        subscription_price,
        available_for_calls: req.available_for_calls,
        call_price_per_minute,
        call_billing: req.call_billing,
        calls_subscribers_only: req.calls_subscribers_only,
        region,
        metadata,
        created_at: String::new(),
        updated_at: String::new(),
    })
}

/// A creator's monthly subscription price, checked: only creators sell subscriptions.
pub fn subscription_price(creator: bool, price: i64) -> Result<i64, Invalid> {
    if !creator {
        return Err(Invalid::Value(
            "subscription_price is for creators: set creator to true to sell subscriptions."
                .to_string(),
        ));
    }
    crate::ledger::amount("subscription_price", price).map_err(|e| Invalid::Value(e.to_string()))
}

/// The longest region name (as nodes name theirs).
const MAX_REGION: usize = 64;

/// A user's region, checked: 1 to 64 visible ASCII characters, as a node's region is named.
pub fn region(value: &str) -> Result<String, Invalid> {
    if (1..=MAX_REGION).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(value.to_string())
    } else {
        Err(Invalid::Value(format!(
            "region {value:.80?} must be 1 to {MAX_REGION} visible ASCII characters, the name of \
             a region of the cluster's nodes."
        )))
    }
}

/// Refuses a creator's setting on a fan.
fn creator_only(creator: bool, what: &str) -> Result<(), Invalid> {
    if creator {
        Ok(())
    } else {
        Err(Invalid::Value(format!(
            "{what} are for creators: set creator to true to take calls."
        )))
    }
}

/// A creator's price per minute of a call, checked: only creators take paid calls.
pub fn call_price(creator: bool, price: i64) -> Result<i64, Invalid> {
    creator_only(creator, "call_price_per_minute and call settings")?;
    crate::ledger::amount("call_price_per_minute", price).map_err(|e| Invalid::Value(e.to_string()))
}

/// The lifetime a token request asks for, checked.
pub fn token_ttl(ttl: Option<u32>) -> Result<u32, Invalid> {
    let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL);
    if (MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(Invalid::Value(format!(
            "ttl_seconds is {ttl}: a user token lives {MIN_TOKEN_TTL} to {MAX_TOKEN_TTL} seconds."
        )))
    }
}

/// Why a user token does not let its bearer in. Each says why in a sentence.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Token(#[from] JwtError),
    #[error("The user token's signing key {0:?} is unknown.")]
    UnknownKey(String),
    #[error("The user token's signing key {0:?} was revoked.")]
    RevokedKey(String),
    #[error(
        "The user token names tenant {0:?} as its issuer but is signed with another tenant's key."
    )]
    OtherTenantsKey(String),
    #[error("The tenant {0:?} is suspended: its users cannot sign in.")]
    Suspended(String),
    #[error("The user token's tenant {0:?} no longer exists.")]
    NoTenant(String),
    #[error("The user {0:?} does not exist in this tenant (deleted, or never created).")]
    NoUser(String),
    #[error("database")]
    Database(#[from] sqlx::Error),
}

impl Refused {
    /// Every outcome label of a token check, `accepted` first.
    pub const OUTCOMES: [&'static str; 14] = [
        "accepted",
        "malformed",
        "algorithm",
        "no_kid",
        "signature",
        "claims",
        "expired",
        "not_yet_valid",
        "unknown_key",
        "revoked_key",
        "other_tenants_key",
        "suspended",
        "no_user",
        "error",
    ];

    /// The metric label of this refusal (one of [`Refused::OUTCOMES`]).
    pub fn outcome(&self) -> &'static str {
        match self {
            Refused::Token(JwtError::Malformed(_)) => "malformed",
            Refused::Token(JwtError::Algorithm(_)) => "algorithm",
            Refused::Token(JwtError::NoKid) => "no_kid",
            Refused::Token(JwtError::Signature(_)) => "signature",
            Refused::Token(JwtError::Claims(_)) => "claims",
            Refused::Token(JwtError::Expired(_)) => "expired",
            Refused::Token(JwtError::NotYetValid(_)) => "not_yet_valid",
            Refused::UnknownKey(_) => "unknown_key",
            Refused::RevokedKey(_) => "revoked_key",
            Refused::OtherTenantsKey(_) => "other_tenants_key",
            Refused::Suspended(_) => "suspended",
            Refused::NoTenant(_) | Refused::NoUser(_) => "no_user",
            Refused::Database(_) => "error",
        }
    }
}

/// Who a valid user token acts as.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Tenant,
    pub user: EndUser,
    /// When the token expires, unix seconds.
    pub expires: i64,
}

/// Checks `token` at `now` (unix seconds): HS256 with a known, unrevoked key of the tenant it
/// names, within its validity, for an existing user of an active tenant.
pub async fn authenticate(conn: &mut Conn, token: &str, now: i64) -> Result<Principal, Refused> {
    let unverified = jwt::parse(token)?;
    let kid = unverified.kid.clone();
    let key = db::signing_keys::get(conn, &kid)
        .await?
        .ok_or_else(|| Refused::UnknownKey(kid.clone()))?;
    // The signature first: nothing about users or tenants is told to a forger.
    let claims = unverified.verify(key.secret.as_bytes(), now)?;
    if key.key.revoked_at.is_some() {
        return Err(Refused::RevokedKey(kid));
    }
    if key.tenant_id != claims.iss {
        return Err(Refused::OtherTenantsKey(claims.iss));
    }
    let tenant = db::tenants::get(conn, &claims.iss)
        .await?
        .ok_or_else(|| Refused::NoTenant(claims.iss.clone()))?;
    if tenant.status == TenantStatus::Suspended {
        return Err(Refused::Suspended(tenant.id));
    }
    let user = db::users::get(conn, &tenant.id, &claims.sub)
        .await?
        .ok_or_else(|| Refused::NoUser(claims.sub.clone()))?;
    Ok(Principal {
        tenant,
        user,
        expires: claims.exp,
    })
}

/// A token for the tenant's user `user_id`, valid `ttl` seconds from `now`, signed with the
/// tenant's managed key (made on first use).
pub async fn mint(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    ttl: u32,
    now: i64,
) -> Result<UserToken, sqlx::Error> {
    let key = db::signing_keys::managed_or_insert(
        conn,
        tenant_id,
        &secrets::new_id("sk"),
        &secrets::new_signing_secret(),
    )
    .await?;
    let claims = jwt::Claims {
        iss: tenant_id.to_string(),
        sub: user_id.to_string(),
        exp: now + i64::from(ttl),
    };
    Ok(UserToken {
        token: jwt::sign(&key.key.id, key.secret.as_bytes(), &claims, now),
        user_id: user_id.to_string(),
        kid: key.key.id,
        expires_at: db::rfc3339(claims.exp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_the_tenants_own_within_a_safe_alphabet() {
        for ok in ["u1", "fan@example.com", "auth0:abc", "A-b_c.d"] {
            assert!(user_id(ok).is_ok(), "{ok}");
        }
        assert!(user_id(&"x".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "ü", "a|b", "a%20"] {
            let e = user_id(bad).expect_err("refused").to_string();
            assert!(e.contains("must be 1 to 128"), "{bad}: {e}");
        }
        assert!(user_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn a_profile_takes_defaults_and_refuses_bad_fields() {
        let p = profile("u1", PutUser::default()).expect("accepted");
        assert_eq!(p.display_name, "u1");
        assert!(p.metadata.is_empty() && !p.creator && p.avatar_url.is_none());

        let bad_url = PutUser {
            avatar_url: Some("javascript:alert(1)".to_string()),
            ..PutUser::default()
        };
        assert!(
            profile("u1", bad_url)
                .expect_err("refused")
                .to_string()
                .contains("avatar_url")
        );

        let mut big = serde_json::Map::new();
        big.insert(
            "bio".to_string(),
            Value::String("x".repeat(MAX_METADATA_BYTES)),
        );
        let too_big = PutUser {
            metadata: Some(big),
            ..PutUser::default()
        };
        assert!(
            profile("u1", too_big)
                .expect_err("refused")
                .to_string()
                .contains("4096")
        );

        let control = PutUser {
            display_name: Some("a\u{0}b".to_string()),
            ..PutUser::default()
        };
        assert!(profile("u1", control).is_err());

        assert_eq!(p.tip_minimum, 1);
        let tips = |v| PutUser {
            tip_minimum: Some(v),
            ..PutUser::default()
        };
        assert_eq!(profile("u1", tips(250)).expect("accepted").tip_minimum, 250);
        for bad in [0, -1, crate::ledger::MAX_AMOUNT + 1] {
            let e = profile("u1", tips(bad)).expect_err("refused").to_string();
            assert!(e.contains("tip_minimum"), "{e}");
        }
        let priced = |creator, v| PutUser {
            creator,
            subscription_price: Some(v),
            ..PutUser::default()
        };
        assert_eq!(p.subscription_price, None);
        let ok = profile("u1", priced(true, 499)).expect("accepted");
        assert_eq!(ok.subscription_price, Some(499));
        for (creator, bad, says) in [
            (true, 0, "subscription_price = 0"),
            (true, -3, "subscription_price = -3"),
            (true, crate::ledger::MAX_AMOUNT + 1, "subscription_price"),
            (false, 499, "for creators"),
        ] {
            let e = profile("u1", priced(creator, bad))
                .expect_err("refused")
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn token_lifetimes_are_bounded() {
        assert_eq!(token_ttl(None).expect("accepted"), DEFAULT_TOKEN_TTL);
        assert!(token_ttl(Some(59)).is_err());
        assert!(token_ttl(Some(86_401)).is_err());
        assert_eq!(token_ttl(Some(60)).expect("accepted"), 60);
    }
}

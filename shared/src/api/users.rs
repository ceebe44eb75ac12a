//! Wire types of a tenant's end users and the tokens they sign in with.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One of a tenant's own users, identified by the tenant's id for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndUser {
    /// The tenant's own id of the user: 1 to 128 of `A-Z a-z 0-9 _ . : @ -`.
    pub id: String,
    /// The name others see; the id when none was given.
    pub display_name: String,
    pub avatar_url: Option<String>,
    /// A creator (who streams, is tipped and called) rather than a fan.
    pub creator: bool,
    /// The smallest tip this user accepts, in minor units of the tenant's currency (default 1).
    pub tip_minimum: i64,
    /// A creator's monthly subscription price in minor units (30 days, bought from the wallet
    /// with `POST /v1/me/subscriptions`); None: not offering one.
    #[serde(default)]
    pub subscription_price: Option<i64>,
    /// A creator takes 1-to-1 calls now (when also online and with a price).
    #[serde(default)]
    pub available_for_calls: bool,
    /// What a minute of a call with this creator costs the caller, in minor units; None: the
    /// creator takes no calls.
    #[serde(default)]
    pub call_price_per_minute: Option<i64>,
    /// Each started minute or each started second is charged (set by the tenant).
    #[serde(default)]
    pub call_billing: crate::api::CallBilling,
    /// Only the creator's subscribers may call them.
    #[serde(default)]
    pub calls_subscribers_only: bool,
    /// The region whose edge nodes relay this user's calls (TURN), when the tenant knows it.
    #[serde(default)]
    pub region: Option<String>,
    /// The tenant's own data about the user: a JSON object of at most 4 KiB.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /v1/me/creators/{creator_id}`: a creator's profile as a signed-in user of the tenant
/// sees it (the web app's creator page): who they are, whether they are online, and what it
/// takes to call them. Never their metadata, region or settings only the tenant sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatorProfile {
    pub id: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    /// The 30-day subscription from the wallet, in minor units; None: not sold.
    pub subscription_price: Option<i64>,
    /// The smallest tip the creator accepts, in minor units.
    pub tip_minimum: i64,
    /// The tenant's currency (ISO 4217), which the prices are in.
    pub currency: String,
    /// Connected to the realtime gateway now (a call can ring only then).
    pub online: bool,
    /// The caller is the creator or holds a running subscription to them (what
    /// `calls_subscribers_only` asks).
    pub subscribed: bool,
    /// The caller and the creator have blocked each other, or one of them has: no calls.
    pub blocked: bool,
    pub calls: CreatorCalls,
}

/// How a creator takes calls, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatorCalls {
    /// Taking calls now: `available_for_calls` with a price (the creator must be online too).
    pub available: bool,
    /// What a minute costs the caller, in minor units of `currency`; None: no calls.
    pub price_per_minute: Option<i64>,
    pub billing: crate::api::CallBilling,
    /// Only the creator's subscribers may call.
    pub subscribers_only: bool,
}

/// `PUT /v1/users/{user_id}`: the whole profile (a field left out takes its default).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutUser {
    /// At most 100 characters; defaults to the user's id.
    pub display_name: Option<String>,
    /// An http or https URL.
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub creator: bool,
    /// The smallest tip the user accepts, 1 to 10^12 minor units; defaults to 1.
    pub tip_minimum: Option<i64>,
    /// A creator's monthly subscription price, 1 to 10^12 minor units; absent: none offered.
    pub subscription_price: Option<i64>,
    /// A creator takes calls now (default false).
    #[serde(default)]
    pub available_for_calls: bool,
    /// A creator's price per minute of a call, 1 to 10^12 minor units; absent: no calls.
    pub call_price_per_minute: Option<i64>,
    /// `minute` (default) or `second`: how the creator's calls are charged.
    #[serde(default)]
    pub call_billing: crate::api::CallBilling,
    /// Only the creator's subscribers may call (default false).
    #[serde(default)]
    pub calls_subscribers_only: bool,
    /// The region (of the cluster's nodes) whose TURN relays this user's calls use.
    pub region: Option<String>,
    /// A JSON object of at most 4 KiB (serialized); defaults to `{}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Map<String, Value>>,
}

/// Parameters of `GET /v1/users`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct UserListParams {
    /// Items per page, 1 to 100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only users whose display name or id contains this text (case-insensitive).
    pub q: Option<String>,
}

/// `POST /v1/users/{user_id}/tokens`: the body may be empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserToken {
    /// How long the token is valid, 60 to 86400 seconds (default 3600).
    pub ttl_seconds: Option<u32>,
}

/// A user token for the tenant's app to hand its user: a JWT (HS256) with `iss` the tenant,
/// `sub` the user, `exp` and `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserToken {
    pub token: String,
    pub user_id: String,
    /// The signing key it is signed with.
    pub kid: String,
    pub expires_at: String,
}

/// A key user tokens are signed with. The secret is shown once, when the key is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKey {
    /// The `kid` a token's header names.
    pub id: String,
    /// Made by Onda for the tokens it mints (`POST /v1/users/{id}/tokens`); revoking it signs
    /// every minted token out, and the next token gets a new key.
    pub managed: bool,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// A new signing key with its secret: the HMAC key is the secret's characters as UTF-8 bytes,
/// as JWT libraries take a string secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSigningKey {
    #[serde(flatten)]
    pub key: SigningKey,
    pub secret: String,
}

/// `PATCH /v1/me`: what a user sets on their own profile (a creator's token).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    /// The monthly subscription price, 1 to 10^12 minor units; null stops offering one
    /// (subscriptions already bought run on at their price); absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub subscription_price: Option<Option<i64>>,
    /// Whether you take calls now; absent leaves it as it is.
    pub available_for_calls: Option<bool>,
    /// Your price per minute of a call, 1 to 10^12 minor units; null: no calls; absent leaves
    /// it as it is.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub call_price_per_minute: Option<Option<i64>>,
    /// Only your subscribers may call you; absent leaves it as it is.
    pub calls_subscribers_only: Option<bool>,
}

/// A field of a partial update that was sent, as its value or null: absent stays `None` (by
/// `#[serde(default)]`), null becomes `Some(None)`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

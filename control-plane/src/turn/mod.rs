//! TURN credentials for calls. Every edge node that runs TURN (coturn, supervised by its agent)
//! checks credentials against the cluster's shared secrets ([`secrets`]) with the TURN REST API
//! scheme (draft-uberti-behave-turn-rest, coturn's `use-auth-secret`): the username is
//! `"{expiry_unix}:{user}"` and the password base64(HMAC-SHA1(secret, username)), so a relay
//! needs no call to the control plane to admit a client, and refuses it once `expiry` passed.
//!
//! The `user` part is `{tenant_id}.{user_id}`: user ids are the tenants' own and unique only
//! within a tenant, and coturn logs each session's username, so an operator can tell whose
//! relay it is. The separator is not `:`, which user ids may contain (coturn reads the expiry
//! up to the first `:`).
//!
//! [`ice_servers`] is what calls hand to both parties and what `GET /v1/me/ice-servers`
//! answers: the TURN URLs of up to [`MAX_NODES`] ready nodes (of the caller's region when one
//! there runs TURN), least loaded first, each with a credential made with the newest secret.

pub mod secrets;

use crate::config::TurnSettings;
use crate::db::Conn;
use base64::Engine as _;
use hmac_sha1::{Hmac, KeyInit as _, Mac as _};
use onda_shared::api::IceServer;
use sha1::Sha1;
use sqlx::Row as _;
use std::sync::OnceLock;

/// ICE servers a call gets: two relays, so one that fails during ICE leaves the other.
pub const MAX_NODES: usize = 2;

/// The TURN REST API credential of `user` that expires at `expires_unix` (seconds):
/// `(username, password)`.
pub fn credential(secret: &str, user: &str, expires_unix: i64) -> (String, String) {
    let username = format!("{expires_unix}:{user}");
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// The `user` part of a TURN username for a tenant's user.
pub fn turn_user(tenant_id: &str, user_id: &str) -> String {
    let user = format!("{tenant_id}.{user_id}");
    // coturn refuses a username holding both "union" and "select" (its SQL guard,
    // `is_secure_string`); user ids may, so such a user gets a digest of the name instead.
    let lower = user.to_ascii_lowercase();
    if lower.contains("union") && lower.contains("select") {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(user_id.as_bytes());
        return format!("{tenant_id}.sha256-{}", hex::encode(&digest[..12]));
    }
    user
}

static SETTINGS: OnceLock<TurnSettings> = OnceLock::new();

/// Sets this process's `[turn]` settings (the control plane's start); [`ice_servers`] uses the
/// defaults until then. A second call keeps the first settings: a process serves one
/// configuration.
pub fn init(settings: TurnSettings) {
    if SETTINGS.set(settings.clone()).is_err() && SETTINGS.get() != Some(&settings) {
        tracing::warn!("TURN settings were set already; keeping the first ones");
    }
}

/// A control plane's start: its settings, and the cluster's first secret when there is none,
/// so it exists before any node or call asks for one.
pub async fn start(db: &crate::db::Db, settings: &TurnSettings) -> Result<(), sqlx::Error> {
    init(settings.clone());
    let mut c = db.conn().await?;
    secrets::ensure(&mut c, crate::db::now_millis()).await
}

fn settings() -> TurnSettings {
    SETTINGS.get().cloned().unwrap_or_default()
}

/// A ready node with TURN, as the choice of relays sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub node_id: String,
    pub region: String,
    pub turn_urls: Vec<String>,
    /// Stations and live streams the node carries now: its load, as far as the database knows.
    pub carried: i64,
    pub capacity_mbps: i64,
}

/// Up to [`MAX_NODES`] relays for a caller in `region`: that region's when one there runs TURN,
/// else any region's; the least loaded first (fewest carried objects per Mbit/s of capacity),
/// ties by node id.
pub fn choose(relays: &[Relay], region: Option<&str>) -> Vec<Relay> {
    let in_region: Vec<&Relay> = match region {
        Some(r) if relays.iter().any(|n| n.region == r) => {
            relays.iter().filter(|n| n.region == r).collect()
        }
        _ => relays.iter().collect(),
    };
    let mut chosen = in_region;
    // carried / capacity compared without division: a * cap_b against b * cap_a.
    chosen.sort_by(|a, b| {
        (i128::from(a.carried) * i128::from(b.capacity_mbps.max(1)))
            .cmp(&(i128::from(b.carried) * i128::from(a.capacity_mbps.max(1))))
            .then_with(|| a.node_id.cmp(&b.node_id))
    });
    chosen.into_iter().take(MAX_NODES).cloned().collect()
}

/// Ready nodes (not draining, not revoked) that advertise TURN URLs, with their load.
async fn relays(conn: &mut Conn) -> Result<Vec<Relay>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT n.id, n.region, n.turn_urls, n.capacity_mbps, \
         (SELECT COUNT(*) FROM carriage c WHERE c.node_id = n.id AND c.until_ms IS NULL) \
         AS carried \
         FROM nodes n WHERE n.status = 'ready' AND n.draining = 0 AND n.revoked_at IS NULL \
         AND n.turn_urls <> '[]' ORDER BY n.id",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let raw: String = row.try_get("turn_urls")?;
            let turn_urls: Vec<String> =
                serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
                    index: "turn_urls".to_string(),
                    source: format!("turn_urls is not a JSON array of strings ({e}): {raw:.64}")
                        .into(),
                })?;
            Ok(Relay {
                node_id: row.try_get("id")?,
                region: row.try_get("region")?,
                turn_urls,
                carried: row.try_get("carried")?,
                capacity_mbps: row.try_get("capacity_mbps")?,
            })
        })
        .collect()
}

/// The ICE servers for `user` of `tenant` calling from `region` at `now_ms`: each chosen
/// relay's TURN URLs with a credential valid for `turn.credential_ttl_secs`. Empty when no
/// ready node runs TURN (peers then connect directly or not at all).
pub async fn ice_servers(
    conn: &mut Conn,
    (tenant_id, user_id): (&str, &str),
    region: Option<&str>,
    now_ms: i64,
) -> Result<Vec<IceServer>, sqlx::Error> {
    Ok(
        ice_servers_with(conn, &settings(), (tenant_id, user_id), region, now_ms)
            .await?
            .0,
    )
}

/// [`ice_servers`] with explicit settings, and the credentials' expiry (Unix seconds).
pub async fn ice_servers_with(
    conn: &mut Conn,
    settings: &TurnSettings,
    (tenant_id, user_id): (&str, &str),
    region: Option<&str>,
    now_ms: i64,
) -> Result<(Vec<IceServer>, i64), sqlx::Error> {
    let ttl = i64::try_from(settings.credential_ttl_secs).unwrap_or(i64::MAX);
    let expires = now_ms.div_euclid(1000).saturating_add(ttl);
    let chosen = choose(&relays(conn).await?, region);
    if chosen.is_empty() {
        return Ok((Vec::new(), expires));
    }
    let secret = secrets::for_minting(conn, now_ms).await?;
    let (username, password) = credential(&secret, &turn_user(tenant_id, user_id), expires);
    let servers = chosen
        .into_iter()
        .map(|r| IceServer {
            urls: r.turn_urls,
            username: Some(username.clone()),
            credential: Some(password.clone()),
        })
        .collect();
    Ok((servers, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector computed apart from this code:
    /// `python3 -c 'import hmac,hashlib,base64; u="1767225600:ten_abc.user-1";
    /// print(base64.b64encode(hmac.new(b"north-sea-secret", u.encode(),
    /// hashlib.sha1).digest()).decode())'`.
    #[test]
    fn the_credential_is_the_turn_rest_api_one() {
        let (username, password) = credential(
            "north-sea-secret",
            &turn_user("ten_abc", "user-1"),
            1_767_225_600,
        );
        assert_eq!(username, "1767225600:ten_abc.user-1");
        assert_eq!(password, "vpyWQCNtUHfYq4pR4hh5XeSYPxQ=");
        // Another secret, user or expiry is another password.
        let other = |s: &str, u: &str, e: i64| credential(s, u, e).1;
        assert_ne!(
            other("north-sea-secreT", "ten_abc.user-1", 1_767_225_600),
            password
        );
        assert_ne!(
            other("north-sea-secret", "ten_abc.user-2", 1_767_225_600),
            password
        );
        assert_ne!(
            other("north-sea-secret", "ten_abc.user-1", 1_767_225_601),
            password
        );
    }

    #[test]
    fn a_user_id_coturn_would_refuse_is_named_by_its_digest() {
        assert_eq!(
            turn_user("tnt_a", "fan@example.com"),
            "tnt_a.fan@example.com"
        );
        let odd = turn_user("tnt_a", "Union-Select:1");
        assert!(odd.starts_with("tnt_a.sha256-") && odd.len() == "tnt_a.sha256-".len() + 24);
        assert!(!odd.to_ascii_lowercase().contains("union"), "{odd}");
        assert_ne!(odd, turn_user("tnt_a", "Union-Select:2"));
    }

    fn relay(id: &str, region: &str, carried: i64, capacity_mbps: i64) -> Relay {
        Relay {
            node_id: id.into(),
            region: region.into(),
            turn_urls: vec![format!("turn:{id}:3478?transport=udp")],
            carried,
            capacity_mbps,
        }
    }

    #[test]
    fn relays_are_of_the_region_when_it_has_one_least_loaded_first() {
        let all = [
            relay("a", "eu", 5, 1000),
            relay("b", "eu", 1, 1000),
            relay("c", "us", 0, 1000),
            relay("d", "eu", 4, 10_000),
        ];
        let ids = |r: Vec<Relay>| r.into_iter().map(|r| r.node_id).collect::<Vec<_>>();
        assert_eq!(ids(choose(&all, Some("eu"))), ["d", "b"]);
        assert_eq!(ids(choose(&all, Some("us"))), ["c"]);
        // No relay in the region, or no region: any region's.
        assert_eq!(ids(choose(&all, Some("ap"))), ["c", "d"]);
        assert_eq!(ids(choose(&all, None)), ["c", "d"]);
        assert!(choose(&[], Some("eu")).is_empty());
        // Equal load: by id.
        let even = [relay("y", "eu", 0, 0), relay("x", "eu", 0, 0)];
        assert_eq!(ids(choose(&even, None)), ["x", "y"]);
    }
}

//! The cluster's TURN shared secrets (table `turn_secrets`). A control plane makes the first one
//! when it starts; the leader makes a new one every `turn.rotate_secs` and deletes an old one once
//! every credential made with it has expired, and puts the live ones in the desired state of each
//! node that runs TURN ([`crate::cluster::round`]).
//!
//! Credentials are made with the newest secret that is at least [`SPREAD_MS`] old (the newest
//! of all when none is), so that a secret the leader just made has reached the nodes before a
//! client presents a credential made with it. An older secret is thus used until its successor
//! is [`SPREAD_MS`] old, and kept `turn.credential_ttl_secs` (plus [`CLOCK_SLACK_MS`]) beyond.

use crate::config::TurnSettings;
use crate::db::Conn;
use sqlx::Row as _;

/// How long a new secret waits before credentials are made with it: the leader writes it into
/// the nodes' desired states in the round that makes it, and a node applies one within a
/// heartbeat or two.
pub const SPREAD_MS: i64 = 15_000;

/// Margin for the clocks of the nodes (coturn checks the expiry by its own clock).
pub const CLOCK_SLACK_MS: i64 = 60_000;

/// A stored secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    pub secret: String,
    pub created_ms: i64,
}

/// What the leader does to the secrets now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Make a new secret: there is none, or the newest is `rotate_secs` old.
    pub make: bool,
    /// Ids of secrets no valid credential can have been made with any more.
    pub delete: Vec<String>,
}

/// The rotation due at `now_ms` (pure).
pub fn plan(stored: &[Stored], now_ms: i64, settings: &TurnSettings) -> Rotation {
    let rotate_ms = i64::try_from(settings.rotate_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let ttl_ms =
        i64::try_from(settings.credential_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut newest_first: Vec<&Stored> = stored.iter().collect();
    newest_first.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    let make = newest_first
        .first()
        .is_none_or(|s| now_ms.saturating_sub(s.created_ms) >= rotate_ms);
    // A secret is last used for minting when its successor is SPREAD_MS old; its credentials
    // are valid a TTL after that.
    let delete = newest_first
        .windows(2)
        .filter(|pair| {
            let successor_in_use = pair[0].created_ms.saturating_add(SPREAD_MS);
            now_ms > successor_in_use.saturating_add(ttl_ms + CLOCK_SLACK_MS)
        })
        .map(|pair| pair[1].id.clone())
        .collect();
    Rotation { make, delete }
}

/// The secret new credentials are made with (pure): the newest at least [`SPREAD_MS`] old,
/// else the newest.
pub fn minting(stored: &[Stored], now_ms: i64) -> Option<&Stored> {
    let order = |a: &&Stored, b: &&Stored| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id));
    stored
        .iter()
        .filter(|s| now_ms.saturating_sub(s.created_ms) >= SPREAD_MS)
        .max_by(order)
        .or_else(|| stored.iter().max_by(order))
}

pub async fn all(conn: &mut Conn) -> Result<Vec<Stored>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, secret, created_ms FROM turn_secrets ORDER BY created_ms")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Stored {
                id: r.try_get("id")?,
                secret: r.try_get("secret")?,
                created_ms: r.try_get("created_ms")?,
            })
        })
        .collect()
}

/// Stores a new random secret (256 bits, hex) made at `now_ms`.
async fn make(conn: &mut Conn, now_ms: i64) -> Result<Stored, sqlx::Error> {
    let stored = Stored {
        id: crate::secrets::new_time_id("turn", now_ms),
        secret: hex::encode(rand::random::<[u8; 32]>()),
        created_ms: now_ms,
    };
    sqlx::query("INSERT INTO turn_secrets (id, secret, created_ms) VALUES ($1, $2, $3)")
        .bind(&stored.id)
        .bind(&stored.secret)
        .bind(stored.created_ms)
        .execute(conn)
        .await?;
    Ok(stored)
}

/// Makes the first secret when there is none (a control plane's start). Two replicas starting
/// together may both make one: both are live, and the newer is used.
pub async fn ensure(conn: &mut Conn, now_ms: i64) -> Result<(), sqlx::Error> {
    if all(conn).await?.is_empty() {
        let s = make(conn, now_ms).await?;
        tracing::info!("made the first TURN secret ({})", s.id);
    }
    Ok(())
}

/// The secret to make a credential with now (one is made if there is none yet).
pub async fn for_minting(conn: &mut Conn, now_ms: i64) -> Result<String, sqlx::Error> {
    let stored = all(conn).await?;
    match minting(&stored, now_ms) {
        Some(s) => Ok(s.secret.clone()),
        None => Ok(make(conn, now_ms).await?.secret),
    }
}

/// The leader's rotation: makes and deletes what [`plan`] says, and answers the live secrets,
/// newest first (what the nodes get).
pub async fn rotate(
    conn: &mut Conn,
    now_ms: i64,
    settings: &TurnSettings,
) -> Result<Vec<String>, sqlx::Error> {
    let mut stored = all(conn).await?;
    let rotation = plan(&stored, now_ms, settings);
    for id in &rotation.delete {
        sqlx::query("DELETE FROM turn_secrets WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        tracing::info!("deleted the TURN secret {id}: every credential made with it has expired");
    }
    stored.retain(|s| !rotation.delete.contains(&s.id));
    if rotation.make {
        let s = make(conn, now_ms).await?;
        tracing::info!("made a new TURN secret ({})", s.id);
        stored.push(s);
    }
    stored.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    Ok(stored.into_iter().map(|s| s.secret).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, created_ms: i64) -> Stored {
        Stored {
            id: id.into(),
            secret: format!("secret-{id}"),
            created_ms,
        }
    }

    fn settings() -> TurnSettings {
        TurnSettings {
            rotate_secs: 100,
            credential_ttl_secs: 10,
            realm: "onda".into(),
        }
    }

    #[test]
    fn a_secret_is_made_when_there_is_none_and_then_every_rotation() {
        let st = settings();
        assert!(plan(&[], 0, &st).make);
        assert!(!plan(&[s("a", 1_000)], 100_999, &st).make);
        assert!(plan(&[s("a", 1_000)], 101_000, &st).make);
    }

    #[test]
    fn an_old_secret_goes_once_its_last_credentials_expired() {
        let st = settings();
        let both = [s("old", 0), s("new", 100_000)];
        // "old" makes credentials until "new" is SPREAD_MS old; they last 10 s, plus the slack.
        let last_valid = 100_000 + SPREAD_MS + 10_000 + CLOCK_SLACK_MS;
        assert!(plan(&both, last_valid, &st).delete.is_empty());
        assert_eq!(plan(&both, last_valid + 1, &st).delete, ["old"]);
        // The newest is never deleted, however old.
        assert!(plan(&[s("only", 0)], i64::MAX / 2, &st).delete.is_empty());
    }

    #[test]
    fn credentials_use_the_newest_secret_the_nodes_have_had_time_to_get() {
        let both = [s("old", 0), s("new", 100_000)];
        assert_eq!(
            minting(&both, 100_000 + SPREAD_MS - 1)
                .expect("a secret")
                .id,
            "old"
        );
        assert_eq!(
            minting(&both, 100_000 + SPREAD_MS).expect("a secret").id,
            "new"
        );
        // A cluster's very first secret is used at once: there is no other.
        assert_eq!(minting(&[s("first", 5)], 6).expect("a secret").id, "first");
        assert!(minting(&[], 0).is_none());
    }
}

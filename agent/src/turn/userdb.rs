//! coturn's SQLite user database, which holds only the TURN REST API secrets (table
//! `turn_secret`, coturn's own schema). coturn reads the table on every authentication, so the
//! agent rewrites it when the desired state brings new secrets and coturn takes them without a
//! restart, relays in progress untouched (checked in coturn's `userdb.c`/`dbd_sqlite.c`:
//! `get_auth_secrets` queries the driver per request; a static `static-auth-secret` would need
//! a restart, as coturn rereads nothing on SIGHUP but its log file).

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
use std::path::Path;

/// coturn's `turn_secret` table, as coturn itself creates it (`init_sqlite_database`).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS turn_secret (realm varchar(127) default '', \
    value varchar(127), primary key (realm, value))";

async fn open(path: &Path) -> anyhow::Result<SqliteConnection> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // coturn reads while the agent writes: WAL keeps its reads from failing on our lock.
        .journal_mode(SqliteJournalMode::Wal);
    let mut conn = SqliteConnection::connect_with(&opts).await.map_err(|e| {
        anyhow::anyhow!("cannot open coturn's user database {}: {e}", path.display())
    })?;
    sqlx::query(SCHEMA).execute(&mut conn).await?;
    Ok(conn)
}

/// Makes the table `secrets` of `realm`, and nothing else, in one transaction.
pub async fn write(path: &Path, realm: &str, secrets: &[String]) -> anyhow::Result<()> {
    let mut conn = open(path).await?;
    let mut tx = conn.begin().await?;
    sqlx::query("DELETE FROM turn_secret")
        .execute(&mut *tx)
        .await?;
    for s in secrets {
        sqlx::query("INSERT OR IGNORE INTO turn_secret (realm, value) VALUES (?1, ?2)")
            .bind(realm)
            .bind(s)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// The secrets of `realm` in the table (tests).
pub async fn read(path: &Path, realm: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = open(path).await?;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT value FROM turn_secret WHERE realm = ?1 ORDER BY value")
            .bind(realm)
            .fetch_all(&mut conn)
            .await?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_table_holds_exactly_the_last_secrets_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let db = dir.path().join("turndb");
        write(&db, "onda", &["b".into(), "a".into()])
            .await
            .expect("write");
        assert_eq!(read(&db, "onda").await.expect("read"), ["a", "b"]);
        write(&db, "onda", &["c".into(), "b".into()])
            .await
            .expect("write");
        assert_eq!(read(&db, "onda").await.expect("read"), ["b", "c"]);
        write(&db, "other", &["d".into()]).await.expect("write");
        assert!(read(&db, "onda").await.expect("read").is_empty());
        assert_eq!(read(&db, "other").await.expect("read"), ["d"]);
    }
}

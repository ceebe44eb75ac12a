//! A database of its own for each test: a SQLite file in a temp dir, or a fresh PostgreSQL
//! database (dropped afterwards) on the server at `ONDA_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! PostgreSQL tests run whenever the server is reachable. When it is not, they are skipped with a
//! message, except under `CI=true`, where an unreachable PostgreSQL fails the test so the
//! suite can never be skipped silently.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("ONDA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

impl TestDb {
    /// A new empty database, or None when PostgreSQL is unreachable outside CI.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("onda.db").display());
                Some(TestDb {
                    url,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = match PgConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) if !in_ci() => {
                        eprintln!(
                            "SKIPPED: PostgreSQL at {admin} is unreachable ({e}); CI=true makes this a failure"
                        );
                        return None;
                    }
                    Err(e) => panic!("PostgreSQL at {admin} is unreachable under CI=true: {e}"),
                };
                let name = format!("onda_test_{}_{}", std::process::id(), rand::random::<u32>());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg: Some((admin.clone(), name)),
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs outside async context guarantees: use a private runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

//! The test harness: starts real `onda` processes (free ports, a temp dir each, logs kept and
//! printed when a test fails, children killed on drop), starts in-process control planes on
//! SQLite or a per-test PostgreSQL database, and waits on conditions with deadlines.
#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cluster;
pub mod db;
pub mod edge;
pub mod etcd;
pub mod fixture;
pub mod glass;
pub mod hls_load;
pub mod load;
pub mod media;
pub mod process;
pub mod realtime;
pub mod realtime_bench;
pub mod rogue;
pub mod rtmp;
pub mod sioconn;
pub mod sioload;
pub mod turn;
pub mod usage;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The built web app (`web/dist`; `make test` builds it).
pub fn web_app_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist")
}

/// Declares each named `async fn NAME(Backend)` as two tests, `sqlite::NAME` and
/// `postgres::NAME` (the test file imports `Backend`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

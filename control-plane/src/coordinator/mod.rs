//! The coordinator: where control-plane replicas keep ephemeral cluster state and agree on a
//! leader. A small key/value surface with leases, prefix watches and an election, so the typed
//! cluster store above it (the cluster module's `store`) is written once and runs on either
//! implementation:
//! etcd ([`etcd::EtcdCoordinator`]) for several replicas, or in-process
//! ([`memory::MemoryCoordinator`]) for a single control plane. Durable configuration stays in the
//! database; what lives here (leases, placement, desired state, node load) can be rebuilt.

pub mod etcd;
pub mod memory;

use std::time::Duration;
use tokio::sync::mpsc;

pub type LeaseId = i64;

#[async_trait::async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Writes `key`; with a lease, the key disappears when the lease expires.
    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> anyhow::Result<()>;
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Every key under `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>>;
    async fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// A lease that expires `ttl` after its last keep-alive.
    async fn grant(&self, ttl: Duration) -> anyhow::Result<LeaseId>;
    /// Extends a lease; `false` when it already expired (its keys are gone).
    async fn keep_alive(&self, lease: LeaseId) -> anyhow::Result<bool>;
    async fn revoke(&self, lease: LeaseId) -> anyhow::Result<()>;
    /// A message after every change under `prefix` (coalesced: a message may stand for several
    /// changes). The channel closes when the watch breaks; the caller watches again and re-reads.
    async fn watch(&self, prefix: &str) -> anyhow::Result<mpsc::Receiver<()>>;
    /// Returns once `candidate` leads `election`; leadership lasts as long as `lease` lives.
    async fn campaign(&self, election: &str, candidate: &str, lease: LeaseId)
    -> anyhow::Result<()>;
    /// The current leader's candidate name.
    async fn leader(&self, election: &str) -> anyhow::Result<Option<String>>;
    /// Gives up leadership won by this instance's last campaign.
    async fn resign(&self, election: &str) -> anyhow::Result<()>;
}

/// The behaviour every implementation must show; the unit tests run it on the in-process
/// coordinator and the integration tests on a real etcd.
pub async fn conformance(c: &dyn Coordinator) -> anyhow::Result<()> {
    use anyhow::ensure;
    c.put("/t/a", b"1", None).await?;
    c.put("/t/b", b"2", None).await?;
    c.put("/u/c", b"3", None).await?;
    ensure!(
        c.get("/t/a").await?.as_deref() == Some(&b"1"[..]),
        "get after put"
    );
    let listed = c.list("/t/").await?;
    ensure!(
        listed
            == vec![
                ("/t/a".into(), b"1".to_vec()),
                ("/t/b".into(), b"2".to_vec())
            ],
        "list /t/ gave {listed:?}"
    );
    c.delete("/t/a").await?;
    ensure!(c.get("/t/a").await?.is_none(), "get after delete");

    let mut w = c.watch("/t/").await?;
    c.put("/u/other", b"x", None).await?;
    c.put("/t/z", b"9", None).await?;
    tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no watch event within 5 s"))?
        .ok_or_else(|| anyhow::anyhow!("watch closed"))?;

    let lease = c.grant(Duration::from_secs(2)).await?;
    c.put("/t/leased", b"l", Some(lease)).await?;
    ensure!(c.keep_alive(lease).await?, "fresh lease not alive");
    c.revoke(lease).await?;
    ensure!(
        c.get("/t/leased").await?.is_none(),
        "leased key outlived its lease"
    );
    ensure!(!c.keep_alive(lease).await?, "revoked lease still alive");

    let lease = c.grant(Duration::from_secs(2)).await?;
    c.campaign("/e/leader", "me", lease).await?;
    ensure!(
        c.leader("/e/leader").await?.as_deref() == Some("me"),
        "leader after campaign"
    );
    c.resign("/e/leader").await?;
    ensure!(
        c.leader("/e/leader").await?.is_none(),
        "leader after resign"
    );
    c.revoke(lease).await?;
    Ok(())
}

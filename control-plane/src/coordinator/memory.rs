//! The in-process coordinator for a single control plane (`onda dev`, small installs): a sorted
//! map with leases that expire on a timer, watches as channels, and an election that the first
//! (only) candidate wins. Nothing survives a restart, which is what leases mean anyway; the
//! scheduler rebuilds the rest.

use super::{Coordinator, LeaseId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    kv: BTreeMap<String, (Vec<u8>, Option<LeaseId>)>,
    leases: HashMap<LeaseId, (Duration, Instant)>,
    next_lease: LeaseId,
    watches: Vec<(String, mpsc::Sender<()>)>,
    leaders: BTreeMap<String, (String, LeaseId)>,
}

#[derive(Clone, Default)]
pub struct MemoryCoordinator {
    state: Arc<Mutex<State>>,
    /// Wakes campaigners when an election becomes free.
    freed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for MemoryCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryCoordinator")
    }
}

impl MemoryCoordinator {
    /// A coordinator whose leases expire on a background task of the current runtime.
    pub fn start() -> MemoryCoordinator {
        let c = MemoryCoordinator::default();
        let weak = Arc::downgrade(&c.state);
        let freed = c.freed.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                let Ok(mut s) = state.lock() else { return };
                let now = Instant::now();
                let expired: Vec<LeaseId> = s
                    .leases
                    .iter()
                    .filter(|(_, (_, deadline))| *deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                if !expired.is_empty() {
                    for id in expired {
                        drop_lease(&mut s, id);
                    }
                    freed.notify_waiters();
                }
            }
        });
        c
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("coordinator state poisoned"))
    }
}

fn notify(s: &mut State, key: &str) {
    s.watches.retain(|(prefix, tx)| {
        if key.starts_with(prefix.as_str()) {
            // Full means a wake-up is already pending: coalesced, as the trait allows.
            !matches!(tx.try_send(()), Err(mpsc::error::TrySendError::Closed(_)))
        } else {
            !tx.is_closed()
        }
    });
}

fn drop_lease(s: &mut State, id: LeaseId) {
    s.leases.remove(&id);
    let keys: Vec<String> =
        s.kv.iter()
            .filter(|(_, (_, l))| *l == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
    for k in keys {
        s.kv.remove(&k);
        notify(s, &k);
    }
    s.leaders.retain(|_, (_, l)| *l != id);
}

#[async_trait::async_trait]
impl Coordinator for MemoryCoordinator {
    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> anyhow::Result<()> {
        let mut s = self.lock()?;
        if let Some(l) = lease {
            anyhow::ensure!(s.leases.contains_key(&l), "lease {l} expired");
        }
        s.kv.insert(key.to_string(), (value.to_vec(), lease));
        notify(&mut s, key);
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.lock()?.kv.get(key).map(|(v, _)| v.clone()))
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let s = self.lock()?;
        Ok(s.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect())
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let mut s = self.lock()?;
        if s.kv.remove(key).is_some() {
            notify(&mut s, key);
        }
        Ok(())
    }

    async fn grant(&self, ttl: Duration) -> anyhow::Result<LeaseId> {
        let mut s = self.lock()?;
        s.next_lease += 1;
        let id = s.next_lease;
        s.leases.insert(id, (ttl, Instant::now() + ttl));
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> anyhow::Result<bool> {
        let mut s = self.lock()?;
        let now = Instant::now();
        match s.leases.get_mut(&lease) {
            Some((ttl, deadline)) if *deadline > now => {
                *deadline = now + *ttl;
                Ok(true)
            }
            Some(_) => {
                drop_lease(&mut s, lease);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> anyhow::Result<()> {
        drop_lease(&mut *self.lock()?, lease);
        self.freed.notify_waiters();
        Ok(())
    }

    async fn watch(&self, prefix: &str) -> anyhow::Result<mpsc::Receiver<()>> {
        let (tx, rx) = mpsc::channel(1);
        self.lock()?.watches.push((prefix.to_string(), tx));
        Ok(rx)
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        lease: LeaseId,
    ) -> anyhow::Result<()> {
        loop {
            let freed = self.freed.notified();
            {
                let mut s = self.lock()?;
                anyhow::ensure!(s.leases.contains_key(&lease), "lease {lease} expired");
                if !s.leaders.contains_key(election) {
                    s.leaders
                        .insert(election.to_string(), (candidate.to_string(), lease));
                    return Ok(());
                }
            }
            freed.await;
        }
    }

    async fn leader(&self, election: &str) -> anyhow::Result<Option<String>> {
        Ok(self.lock()?.leaders.get(election).map(|(c, _)| c.clone()))
    }

    async fn resign(&self, election: &str) -> anyhow::Result<()> {
        self.lock()?.leaders.remove(election);
        self.freed.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract() {
        super::super::conformance(&MemoryCoordinator::start())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn leases_expire_and_free_the_election() {
        let c = MemoryCoordinator::start();
        let mut w = c.watch("/n/").await.unwrap();
        let lease = c.grant(Duration::from_millis(300)).await.unwrap();
        c.put("/n/alive", b"", Some(lease)).await.unwrap();
        w.recv().await.unwrap();
        c.campaign("/e", "a", lease).await.unwrap();
        let other = c.grant(Duration::from_secs(10)).await.unwrap();
        let c2 = c.clone();
        let waiting = tokio::spawn(async move { c2.campaign("/e", "b", other).await });
        // The first lease is never kept alive: its key goes, and b becomes leader.
        tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(c.get("/n/alive").await.unwrap(), None);
        assert_eq!(c.leader("/e").await.unwrap().as_deref(), Some("b"));
        assert!(!c.keep_alive(lease).await.unwrap());
    }
}

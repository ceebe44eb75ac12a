//! The coordinator on etcd, for several control-plane replicas: keys under a prefix, etcd leases
//! (kept alive by our own calls, one keep-alive stream per lease), prefix watches, and etcd's
//! election API for the leader.

use super::{Coordinator, LeaseId};
use anyhow::Context as _;
use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaderKey, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    ResignOptions, WatchOptions,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

pub struct EtcdCoordinator {
    client: Client,
    prefix: String,
    keepers: Mutex<HashMap<LeaseId, (LeaseKeeper, LeaseKeepAliveStream)>>,
    leaders: Mutex<HashMap<String, LeaderKey>>,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdCoordinator({})", self.prefix)
    }
}

impl EtcdCoordinator {
    /// Connects to `endpoints` (`http://127.0.0.1:2379`); every key lives under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> anyhow::Result<EtcdCoordinator> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(", ")))?;
        let c = EtcdCoordinator {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            keepers: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
        };
        // Connecting is lazy: ask something so a wrong address fails here, clearly.
        c.client
            .clone()
            .get("/onda-ping", None)
            .await
            .with_context(|| format!("etcd at {} does not answer", endpoints.join(", ")))?;
        Ok(c)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[async_trait::async_trait]
impl Coordinator for EtcdCoordinator {
    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> anyhow::Result<()> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        self.client
            .clone()
            .put(self.key(key), value, opts)
            .await
            .with_context(|| format!("etcd put {key}"))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let resp = self
            .client
            .clone()
            .get(self.key(key), None)
            .await
            .with_context(|| format!("etcd get {key}"))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let resp = self
            .client
            .clone()
            .get(self.key(prefix), Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("etcd list {prefix}"))?;
        let strip = self.prefix.len();
        let mut out: Vec<(String, Vec<u8>)> = resp
            .kvs()
            .iter()
            .map(|kv| (utf8(kv.key())[strip..].to_string(), kv.value().to_vec()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .clone()
            .delete(self.key(key), None)
            .await
            .with_context(|| format!("etcd delete {key}"))?;
        Ok(())
    }

    async fn grant(&self, ttl: Duration) -> anyhow::Result<LeaseId> {
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
        let resp = self
            .client
            .clone()
            .lease_grant(secs.max(1), None)
            .await
            .context("etcd lease grant")?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> anyhow::Result<bool> {
        let mut keepers = self.keepers.lock().await;
        let result = async {
            if let std::collections::hash_map::Entry::Vacant(slot) = keepers.entry(lease) {
                let pair = self
                    .client
                    .clone()
                    .lease_keep_alive(lease)
                    .await
                    .context("etcd lease keep-alive")?;
                slot.insert(pair);
            }
            let (keeper, stream) = keepers
                .get_mut(&lease)
                .context("keep-alive stream vanished")?;
            keeper.keep_alive().await?;
            let resp = stream
                .message()
                .await?
                .context("etcd closed the keep-alive stream")?;
            anyhow::Ok(resp.ttl() > 0)
        }
        .await;
        match result {
            Ok(true) => Ok(true),
            Ok(false) => {
                keepers.remove(&lease);
                Ok(false)
            }
            Err(e) => {
                // A broken stream is re-opened by the next call.
                keepers.remove(&lease);
                if format!("{e:#}").contains("lease not found") {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn revoke(&self, lease: LeaseId) -> anyhow::Result<()> {
        self.keepers.lock().await.remove(&lease);
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            // Already expired: the outcome the caller wanted.
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(e).context("etcd lease revoke"),
        }
    }

    async fn watch(&self, prefix: &str) -> anyhow::Result<mpsc::Receiver<()>> {
        let mut stream = self
            .client
            .clone()
            .watch(self.key(prefix), Some(WatchOptions::new().with_prefix()))
            .await
            .with_context(|| format!("etcd watch {prefix}"))?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = stream.message() => match msg {
                        Ok(Some(resp)) => {
                            if resp.canceled() {
                                return;
                            }
                            if !resp.events().is_empty()
                                && matches!(tx.try_send(()), Err(mpsc::error::TrySendError::Closed(_)))
                            {
                                return;
                            }
                        }
                        _ => return,
                    },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        lease: LeaseId,
    ) -> anyhow::Result<()> {
        let resp = self
            .client
            .clone()
            .campaign(self.key(election), candidate, lease)
            .await
            .with_context(|| format!("etcd campaign {election}"))?;
        let key = resp
            .leader()
            .cloned()
            .context("etcd campaign answered without a leader key")?;
        self.leaders.lock().await.insert(election.to_string(), key);
        Ok(())
    }

    async fn leader(&self, election: &str) -> anyhow::Result<Option<String>> {
        match self.client.clone().leader(self.key(election)).await {
            Ok(resp) => Ok(resp.kv().map(|kv| utf8(kv.value()))),
            Err(e) if e.to_string().contains("no leader") => Ok(None),
            Err(e) => Err(e).with_context(|| format!("etcd leader {election}")),
        }
    }

    async fn resign(&self, election: &str) -> anyhow::Result<()> {
        if let Some(key) = self.leaders.lock().await.remove(election) {
            self.client
                .clone()
                .resign(Some(ResignOptions::new().with_leader(key)))
                .await
                .with_context(|| format!("etcd resign {election}"))?;
        }
        Ok(())
    }
}

//! The cluster's shared state in the coordinator, typed: the placement, each node's desired
//! state and last observation, liveness, and what each station's origin reports playing. Every
//! key format lives here, and every value is decoded here: a placement, desired state or
//! observation that does not decode is an error naming its key (counted in
//! `onda_cluster_store_corrupt_total{kind}` and logged by the caller), never read as "nothing
//! stored", and the leader skips its round instead of placing every station again from an empty
//! placement (observations are rewritten by every heartbeat, so that heals within a second).
//! A now-playing record that does not decode is counted, logged once and left out: it has no
//! lease and would otherwise stop the cluster until someone deleted it, and it places nothing.

use super::{Observed, keys};
use crate::coordinator::{Coordinator, LeaseId};
use crate::scheduler::Placement;
use onda_shared::cluster::proto::{DesiredState, TrackPlaying};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A read that failed: the coordinator did not answer, or a stored value does not decode.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the coordinator's value at {key} does not decode ({kind}): {error}")]
    Corrupt {
        key: String,
        kind: &'static str,
        error: serde_json::Error,
    },
    #[error(transparent)]
    Coordinator(#[from] anyhow::Error),
}

/// What a stored value is, as the `kind` label of the corrupt-value counter.
const KINDS: [&str; 4] = ["placement", "desired", "observed", "now_playing"];

/// The typed view of the coordinator's cluster keys.
#[derive(Clone)]
pub struct Store {
    coord: Arc<dyn Coordinator>,
    corrupt: prometheus::IntCounterVec,
    /// Now-playing keys already logged as corrupt (each is logged once).
    skipped: Arc<std::sync::Mutex<BTreeSet<String>>>,
}

impl Store {
    pub fn new(coord: Arc<dyn Coordinator>, corrupt: prometheus::IntCounterVec) -> Store {
        // Every kind is exported from the start, at 0, so alerts see the series.
        for kind in KINDS {
            corrupt.with_label_values(&[kind]);
        }
        Store {
            coord,
            corrupt,
            skipped: Arc::default(),
        }
    }

    /// The coordinator itself, for leases, watches and the election.
    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coord
    }

    fn decode<T: DeserializeOwned>(
        &self,
        key: &str,
        kind: &'static str,
        raw: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(raw).map_err(|error| {
            self.corrupt.with_label_values(&[kind]).inc();
            StoreError::Corrupt {
                key: key.to_string(),
                kind,
                error,
            }
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        kind: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self.coord.get(key).await? {
            Some(raw) => Ok(Some(self.decode(key, kind, &raw)?)),
            None => Ok(None),
        }
    }

    /// Every value under `prefix`, by the rest of its key.
    async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
        kind: &'static str,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        let mut out = BTreeMap::new();
        for (key, raw) in self.coord.list(prefix).await? {
            let value = self.decode(&key, kind, &raw)?;
            out.insert(rest(&key, prefix), value);
        }
        Ok(out)
    }

    async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        lease: Option<LeaseId>,
    ) -> anyhow::Result<()> {
        self.coord
            .put(key, &serde_json::to_vec(value)?, lease)
            .await
    }

    /// The scheduler's placement; `None` before the first leader wrote one.
    pub async fn placement(&self) -> Result<Option<Placement>, StoreError> {
        self.get(keys::PLACEMENT, "placement").await
    }

    pub async fn put_placement(&self, placement: &Placement) -> anyhow::Result<()> {
        self.put(keys::PLACEMENT, placement, None).await
    }

    /// A node's desired state as the leader last wrote it (None before the first).
    pub async fn desired(&self, node: &str) -> Result<Option<DesiredState>, StoreError> {
        self.get(&desired_key(node), "desired").await
    }

    /// Every node's desired state, by node id.
    pub async fn all_desired(&self) -> Result<BTreeMap<String, DesiredState>, StoreError> {
        self.list(keys::DESIRED, "desired").await
    }

    pub async fn put_desired(&self, node: &str, desired: &DesiredState) -> anyhow::Result<()> {
        self.put(&desired_key(node), desired, None).await
    }

    pub async fn delete_desired(&self, node: &str) -> anyhow::Result<()> {
        self.coord.delete(&desired_key(node)).await
    }

    /// Every connected node's last observation, by node id.
    pub async fn observed(&self) -> Result<BTreeMap<String, Observed>, StoreError> {
        self.list(keys::OBSERVED, "observed").await
    }

    /// A node's observation, held by its session's lease.
    pub async fn put_observed(
        &self,
        node: &str,
        observed: &Observed,
        lease: LeaseId,
    ) -> anyhow::Result<()> {
        self.put(&format!("{}{node}", keys::OBSERVED), observed, Some(lease))
            .await
    }

    /// The nodes whose lease lives.
    pub async fn alive(&self) -> anyhow::Result<BTreeSet<String>> {
        Ok(self
            .coord
            .list(keys::ALIVE)
            .await?
            .into_iter()
            .map(|(k, _)| rest(&k, keys::ALIVE))
            .collect())
    }

    /// Marks a node alive for as long as `lease` lives, naming the replica holding it.
    pub async fn put_alive(&self, node: &str, replica: &str, lease: LeaseId) -> anyhow::Result<()> {
        self.coord
            .put(&alive_key(node), replica.as_bytes(), Some(lease))
            .await
    }

    /// Ends a node's liveness now (its stations are placed elsewhere at the next round).
    pub async fn delete_alive(&self, node: &str) -> anyhow::Result<()> {
        self.coord.delete(&alive_key(node)).await
    }

    /// What each station's origin last reported playing, by station id; records that do not
    /// decode are left out (see the module's doc).
    pub async fn now_playing(&self) -> anyhow::Result<BTreeMap<String, TrackPlaying>> {
        let mut out = BTreeMap::new();
        for (key, raw) in self.coord.list(keys::NOW_PLAYING).await? {
            match self.decode(&key, "now_playing", &raw) {
                Ok(track) => {
                    out.insert(rest(&key, keys::NOW_PLAYING), track);
                }
                Err(e) => {
                    let mut skipped = self
                        .skipped
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if skipped.insert(key.clone()) {
                        tracing::warn!("{e}; left out until it is rewritten or deleted");
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn put_now_playing(&self, track: &TrackPlaying) -> anyhow::Result<()> {
        self.put(
            &format!("{}{}", keys::NOW_PLAYING, track.station_id),
            track,
            None,
        )
        .await
    }
}

/// The key of a node's desired state.
pub fn desired_key(node: &str) -> String {
    format!("{}{node}", keys::DESIRED)
}

/// The key of a node's revocation notice.
pub fn revoked_key(node: &str) -> String {
    format!("{}{node}", keys::REVOKED)
}

fn alive_key(node: &str) -> String {
    format!("{}{node}", keys::ALIVE)
}

fn rest(key: &str, prefix: &str) -> String {
    key.strip_prefix(prefix).unwrap_or(key).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::coordinator::memory::MemoryCoordinator;

    fn store() -> Store {
        let corrupt = prometheus::IntCounterVec::new(
            prometheus::Opts::new("corrupt", "corrupt values"),
            &["kind"],
        )
        .unwrap();
        Store::new(Arc::new(MemoryCoordinator::default()), corrupt)
    }

    #[tokio::test]
    async fn a_value_that_does_not_decode_is_an_error_naming_its_key_not_nothing() {
        let s = store();
        assert!(s.placement().await.unwrap().is_none());
        s.coordinator()
            .put(keys::PLACEMENT, b"{\"stations\": 7}", None)
            .await
            .unwrap();
        let err = s.placement().await.unwrap_err();
        assert!(err.to_string().contains(keys::PLACEMENT), "{err}");
        assert!(matches!(err, StoreError::Corrupt { .. }));
        s.put_desired("n1", &DesiredState::default()).await.unwrap();
        s.coordinator()
            .put(&desired_key("n2"), b"not json", None)
            .await
            .unwrap();
        let err = s.all_desired().await.unwrap_err();
        assert!(err.to_string().contains("/nodes/desired/n2"), "{err}");
        assert_eq!(
            s.corrupt.with_label_values(&["placement"]).get()
                + s.corrupt.with_label_values(&["desired"]).get(),
            2
        );
        // A now-playing record that does not decode is left out, not an error.
        let track = TrackPlaying {
            station_id: "s1".into(),
            started_at_ms: 1,
            title: "A - B".into(),
            artist: "A".into(),
            track_title: "B".into(),
            media_sha256: None,
            duration_ms: None,
            live: false,
            streamer: String::new(),
            next_title: None,
            request_id: None,
            next_request_id: None,
        };
        s.put_now_playing(&track).await.unwrap();
        s.coordinator()
            .put(&format!("{}s2", keys::NOW_PLAYING), b"[]", None)
            .await
            .unwrap();
        let np = s.now_playing().await.unwrap();
        assert_eq!(np.keys().collect::<Vec<_>>(), ["s1"]);
        assert_eq!(s.corrupt.with_label_values(&["now_playing"]).get(), 1);
        // Values that decode come back as written.
        assert_eq!(
            s.desired("n1").await.unwrap(),
            Some(DesiredState::default())
        );
    }
}

//! The media store: uploaded audio of the media library and end users' message attachments
//! (`attachment`), kept on local disk, content-addressed by SHA-256.
//!
//! Layout under `media.dir`:
//! - `{sha[0..2]}/{sha}` — one blob per distinct content, whatever number of stations or
//!   tenants hold it (each holder is a row of `media_files` or of `attachments`);
//! - `incoming/upload-*` — uploads being received; removed at start (the directory belongs to
//!   one control plane). Only files of that name are ever removed wholesale, so a mistaken
//!   `media.dir` (say `/`) costs nothing else.
//!
//! Invariants:
//! - A blob's bytes hash to its name: an upload is hashed while it streams to `incoming/` and only a
//!   complete, probed upload is renamed into place (same file system, so the rename is atomic
//!   and a reader never sees a partial blob).
//! - A blob exists while a row references it: rows are inserted and deleted, and blobs placed
//!   and removed, only under [`MediaStore::lock_refs`], and a blob is removed after the commit
//!   that deleted its last row. (A crash between placing a blob and committing its row can
//!   leave an unreferenced blob; it costs no quota and is reused by the next upload of the same
//!   content.)
//! - Nothing of a refused upload stays on disk: its temp file is removed on every path,
//!   including a dropped request (the guard removes it on drop).
//! - Probes share `media.probe_slots` fairly: one tenant holds at most
//!   `media.probe_slots_per_tenant` of them, so its slow uploads never hold every slot while
//!   another tenant's upload waits; an upload that waits longer than `media.probe_wait_secs` is
//!   refused (429, Retry-After).

pub mod art;
pub mod attachment;
pub mod probe;
pub mod unsent;

use crate::config::MediaSettings;
use anyhow::Context as _;
use axum::body::Body;
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Subdirectory of the store holding uploads in progress.
const INCOMING: &str = "incoming";
/// Name prefix of an upload in progress.
const UPLOAD_PREFIX: &str = "upload-";

#[derive(Debug)]
pub struct MediaStore {
    dir: PathBuf,
    tmp: PathBuf,
    max_upload_bytes: u64,
    max_duration: Duration,
    refs: tokio::sync::Mutex<()>,
    probes: ProbeSlots,
}

/// Bounds concurrent probes (each decodes a file with ffmpeg, a core's worth of work) and
/// shares them between tenants.
#[derive(Debug)]
struct ProbeSlots {
    all: Arc<Semaphore>,
    per_tenant: usize,
    /// Each tenant's own share, made on its first upload.
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    wait: Duration,
    metrics: crate::metrics::MediaMetrics,
}

/// A turn to probe: a slot of the tenant's share and one of all slots, given back on drop.
pub struct ProbePermit {
    _tenant: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
    metrics: crate::metrics::MediaMetrics,
}

impl Drop for ProbePermit {
    fn drop(&mut self) {
        self.metrics.probes_running.dec();
    }
}

/// No probe slot came free within `media.probe_wait_secs`.
#[derive(Debug, thiserror::Error)]
#[error("every probe slot this tenant may use stayed busy for {} s", .waited.as_secs())]
pub struct ProbeBusy {
    pub waited: Duration,
}

/// Counts an upload waiting for a slot while it waits (also when the request is dropped).
struct Waiting(crate::metrics::MediaMetrics);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.probes_waiting.dec();
    }
}

/// Proof that the caller holds the store's reference lock (see [`MediaStore::lock_refs`]).
pub struct RefsGuard<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

/// Why an upload could not be received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the upload is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("the upload was interrupted: {0}")]
    Body(axum::Error),
    #[error("cannot write the upload to disk: {0}")]
    Io(#[from] std::io::Error),
}

/// A received upload: a temp file in the store with its hash and size. Dropping it removes the
/// temp file unless [`MediaStore::place`] moved it into the store.
#[derive(Debug)]
pub struct Upload {
    temp: TempFile,
    pub sha256: String,
    pub size_bytes: u64,
}

impl Upload {
    /// Where the bytes are while the upload is checked.
    pub fn path(&self) -> &Path {
        self.temp.path.as_deref().unwrap_or_else(|| Path::new(""))
    }
}

/// A file removed when dropped (unless disarmed), so no early return or cancelled request
/// leaves a partial upload behind.
#[derive(Debug)]
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take()
            && let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), "cannot remove temp upload: {e}");
        }
    }
}

/// True for a SHA-256 as the store names blobs: 64 lowercase hex digits (so a name can never
/// reach outside the store).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl MediaStore {
    /// Opens (creating) the store's directory and removes the uploads an earlier process left
    /// unfinished in `incoming/`.
    pub async fn open(
        settings: &MediaSettings,
        metrics: crate::metrics::MediaMetrics,
    ) -> anyhow::Result<MediaStore> {
        let dir = settings.dir.clone();
        let tmp = dir.join(INCOMING);
        tokio::fs::create_dir_all(&tmp)
            .await
            .with_context(|| format!("cannot create the media directory {}", tmp.display()))?;
        let mut entries = tokio::fs::read_dir(&tmp)
            .await
            .with_context(|| format!("cannot read {}", tmp.display()))?;
        while let Some(e) = entries.next_entry().await? {
            if e.file_name().to_string_lossy().starts_with(UPLOAD_PREFIX)
                && e.file_type().await.is_ok_and(|t| t.is_file())
            {
                tokio::fs::remove_file(e.path())
                    .await
                    .with_context(|| format!("cannot remove {}", e.path().display()))?;
            }
        }
        Ok(MediaStore {
            dir,
            tmp,
            max_upload_bytes: settings.max_upload_bytes,
            max_duration: settings.max_duration,
            refs: tokio::sync::Mutex::new(()),
            probes: ProbeSlots {
                all: Arc::new(Semaphore::new(settings.probe_slots.max(1))),
                per_tenant: settings.probe_slots_per_tenant.max(1),
                tenants: Mutex::new(HashMap::new()),
                wait: settings.probe_wait,
                metrics,
            },
        })
    }

    /// The store's directory (`media.dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest upload accepted, in bytes (`media.max_upload_bytes`).
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// The file holding the content whose SHA-256 (64 lowercase hex digits) is `sha256`, if the
    /// store has it. This is how blobs are served by hash (the QUIC channel sends them to
    /// nodes): the file's bytes hash to `sha256`, it is complete, and it is never modified in
    /// place — it may only disappear once no media file references it, so readers should open
    /// it once and stream from the open handle. Anything that is not a well-formed hash
    /// answers None.
    pub fn blob_path(&self, sha256: &str) -> Option<PathBuf> {
        if !is_sha256(sha256) {
            return None;
        }
        let path = self.path_for(sha256);
        path.is_file().then_some(path)
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2]).join(sha256)
    }

    /// Takes the lock under which rows of `media_files` are inserted or deleted and blobs placed
    /// or removed, so a blob never disappears under a row being committed. Take it before
    /// opening the transaction (one lock order everywhere).
    pub async fn lock_refs(&self) -> RefsGuard<'_> {
        RefsGuard {
            _guard: self.refs.lock().await,
        }
    }

    /// The longest playing time a file may have (`media.max_duration_secs`).
    pub fn max_duration(&self) -> Duration {
        self.max_duration
    }

    /// Waits for a turn to probe an upload of `tenant_id`: first a slot of the tenant's share,
    /// then one of all slots, so a tenant waiting for its own share holds none of the others'.
    /// At most `media.probe_wait_secs` in all.
    pub async fn probe_permit(&self, tenant_id: &str) -> Result<ProbePermit, ProbeBusy> {
        let p = &self.probes;
        let share = {
            let mut tenants = p
                .tenants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Shares nobody holds or waits for are dropped, so the map stays as small as the
            // set of tenants uploading.
            tenants.retain(|_, s| Arc::strong_count(s) > 1);
            tenants
                .entry(tenant_id.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(p.per_tenant)))
                .clone()
        };
        p.metrics.probes_waiting.inc();
        let waiting = Waiting(p.metrics.clone());
        let both = async {
            let tenant = share.acquire_owned().await.ok()?;
            let slot = p.all.clone().acquire_owned().await.ok()?;
            Some((tenant, slot))
        };
        let got = tokio::time::timeout(p.wait, both).await;
        drop(waiting);
        match got {
            Ok(Some((tenant, slot))) => {
                p.metrics.probes_running.inc();
                Ok(ProbePermit {
                    _tenant: tenant,
                    _slot: slot,
                    metrics: p.metrics.clone(),
                })
            }
            // The semaphores are never closed: None cannot happen; treat it as busy.
            Ok(None) | Err(_) => Err(ProbeBusy { waited: p.wait }),
        }
    }

    /// Streams a request body into a temp file of the store, hashing it on the way; refuses it
    /// (and removes what was written) as soon as it exceeds `max_upload_bytes`.
    pub async fn receive(&self, body: Body) -> Result<Upload, ReceiveError> {
        self.receive_at_most(body, self.max_upload_bytes).await
    }

    /// As [`MediaStore::receive`], refusing the upload past `max` bytes (or
    /// `max_upload_bytes`, when that is less).
    pub async fn receive_at_most(&self, body: Body, max: u64) -> Result<Upload, ReceiveError> {
        let max = max.min(self.max_upload_bytes);
        let path = self
            .tmp
            .join(format!("{UPLOAD_PREFIX}{}", crate::secrets::new_id("u")));
        let mut file = tokio::fs::File::create(&path).await?;
        let temp = TempFile { path: Some(path) };
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ReceiveError::Body)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            size = size.saturating_add(data.len() as u64);
            if size > max {
                return Err(ReceiveError::TooLarge { max });
            }
            hasher.update(&data);
            file.write_all(&data).await?;
        }
        file.flush().await?;
        // On disk before a row can reference it.
        file.sync_all().await?;
        Ok(Upload {
            temp,
            sha256: hex::encode(hasher.finalize()),
            size_bytes: size,
        })
    }

    /// Moves a received upload into the store under its hash, unless that content is already
    /// there (another station or tenant uploaded it): then the temp file is simply dropped.
    /// Returns true when a new blob was written.
    pub async fn place(&self, _refs: &RefsGuard<'_>, mut upload: Upload) -> std::io::Result<bool> {
        let blob = self.path_for(&upload.sha256);
        if tokio::fs::try_exists(&blob).await? {
            return Ok(false);
        }
        if let Some(parent) = blob.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let Some(temp) = upload.temp.path.clone() else {
            return Ok(false);
        };
        tokio::fs::rename(&temp, &blob).await?;
        upload.temp.path = None;
        Ok(true)
    }

    /// Removes the blob of `sha256` if no row references it any more (called after the commit
    /// that deleted a row). A failure is logged, not returned: the row is already gone, and a
    /// blob left behind costs no quota.
    pub async fn remove_if_unreferenced(
        &self,
        _refs: &RefsGuard<'_>,
        db: &crate::db::Db,
        sha256: &str,
    ) {
        if !is_sha256(sha256) {
            return;
        }
        let referenced = match db.conn().await {
            Ok(mut conn) => crate::db::media::is_referenced(&mut conn, sha256).await,
            Err(e) => Err(e),
        };
        match referenced {
            Ok(true) => {}
            Ok(false) => {
                let blob = self.path_for(sha256);
                match tokio::fs::remove_file(&blob).await {
                    Ok(()) => {
                        if let Some(parent) = blob.parent() {
                            // Only succeeds when empty: keeps the store free of empty prefixes.
                            let _ = tokio::fs::remove_dir(parent).await;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(sha256, "cannot remove an unreferenced media blob: {e}");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    sha256,
                    "cannot tell whether a media blob is still used: {e}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &Path, max: u64) -> MediaStore {
        let registry = prometheus::Registry::new();
        MediaStore::open(
            &crate::config::MediaConfig {
                dir: dir.join("media"),
                max_upload_bytes: max.max(crate::config::MIN_UPLOAD_BYTES),
                ..Default::default()
            }
            .validate()
            .map(|mut s| {
                s.max_upload_bytes = max;
                s
            })
            .expect("settings"),
            crate::metrics::MediaMetrics::new(&registry).expect("metrics"),
        )
        .await
        .expect("opens")
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn receive_hashes_places_once_and_refuses_oversized() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = store(dir.path(), 10).await;
        let refs = s.lock_refs().await;

        let up = s.receive(Body::from("hello")).await.expect("received");
        assert_eq!(
            up.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(up.size_bytes, 5);
        let sha = up.sha256.clone();
        assert!(s.place(&refs, up).await.expect("placed"), "new blob");
        let again = s.receive(Body::from("hello")).await.expect("received");
        assert!(!s.place(&refs, again).await.expect("placed"), "stored once");
        let blob = s.blob_path(&sha).expect("present");
        assert_eq!(std::fs::read(&blob).expect("read"), b"hello");
        assert_eq!(files_under(s.dir()), vec![blob], "temp files are gone");

        let err = s
            .receive(Body::from("more than ten bytes"))
            .await
            .expect_err("too large");
        assert!(matches!(err, ReceiveError::TooLarge { max: 10 }), "{err}");
        assert_eq!(
            files_under(s.dir()).len(),
            1,
            "nothing of the refused upload"
        );

        // A dropped upload leaves nothing either.
        drop(s.receive(Body::from("bye")).await.expect("received"));
        assert_eq!(files_under(s.dir()).len(), 1);
    }

    #[tokio::test]
    async fn blob_path_only_answers_well_formed_hashes_it_has() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = store(dir.path(), 1024).await;
        assert_eq!(s.blob_path("../../etc/passwd"), None);
        assert_eq!(s.blob_path(&"A".repeat(64)), None);
        assert_eq!(s.blob_path(&"a".repeat(64)), None, "absent");
        assert_eq!(s.blob_path(""), None);
    }

    #[tokio::test]
    async fn open_empties_leftover_uploads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tmp = dir.path().join("media").join(INCOMING);
        std::fs::create_dir_all(&tmp).expect("mkdir");
        std::fs::write(tmp.join("upload-x"), b"partial").expect("write");
        std::fs::write(tmp.join("notes.txt"), b"not ours").expect("write");
        let s = store(dir.path(), 1024).await;
        assert_eq!(files_under(s.dir()), vec![tmp.join("notes.txt")]);
    }
}

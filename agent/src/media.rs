//! The node's media cache: files the AutoDJ plays, stored by SHA-256 under the state directory
//! and fetched from the control plane over the session's QUIC connection (one extra stream per
//! file). A file is written to a temporary name while it is hashed and renamed into place only
//! when its size and hash match what was asked for, so a cached file is always the right one.

use anyhow::Context as _;
use onda_shared::cluster::proto::{self, MediaReply, MediaRequest};
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt as _;

#[derive(Debug, Clone)]
pub struct MediaCache {
    dir: PathBuf,
}

pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl MediaCache {
    pub fn new(dir: PathBuf) -> MediaCache {
        MediaCache { dir }
    }

    /// Where the file with this hash is (or will be) kept.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    pub fn has(&self, sha256: &str) -> bool {
        valid_sha256(sha256) && self.path(sha256).is_file()
    }

    /// Fetches one file from the control plane and keeps it once verified.
    pub async fn fetch(
        &self,
        conn: &quinn::Connection,
        sha256: &str,
        expected_size: u64,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(valid_sha256(sha256), "{sha256:?} is not a SHA-256");
        let (mut send, mut recv) = conn.open_bi().await?;
        proto::write_frame(
            &mut send,
            &MediaRequest {
                sha256: sha256.to_string(),
            },
        )
        .await?;
        send.finish()?;
        let size = match proto::read_frame::<_, MediaReply>(&mut recv).await? {
            Some(MediaReply::Found { size_bytes }) => size_bytes,
            Some(MediaReply::NotFound { message }) => anyhow::bail!("{message}"),
            None => anyhow::bail!("the control plane closed the media stream"),
        };
        anyhow::ensure!(
            size == expected_size,
            "the control plane offers {size} bytes for {sha256}, the desired state says {expected_size}"
        );
        tokio::fs::create_dir_all(&self.dir)
            .await
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let tmp = self
            .dir
            .join(format!(".{sha256}.part-{}", rand::random::<u32>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            while let Some(chunk) = recv.read_chunk(64 * 1024, true).await? {
                got += chunk.bytes.len() as u64;
                anyhow::ensure!(got <= size, "the control plane sent more than {size} bytes");
                hasher.update(&chunk.bytes);
                file.write_all(&chunk.bytes).await?;
            }
            anyhow::ensure!(
                got == size,
                "the media stream ended after {got} of {size} bytes"
            );
            let actual = hex::encode(hasher.finalize());
            anyhow::ensure!(
                actual == sha256,
                "the file received hashes to {actual}, not {sha256}"
            );
            file.sync_all().await?;
            tokio::fs::rename(&tmp, self.path(sha256)).await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

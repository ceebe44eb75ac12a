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
        let result = receive_verified(&mut recv, &tmp, sha256, size).await;
        if result.is_ok() {
            tokio::fs::rename(&tmp, self.path(sha256)).await?;
        } else {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

/// Writes exactly `size` bytes of `body` to `tmp`, hashing them, and fails unless they are
/// that many and hash to `sha256` (the caller then drops `tmp`; only a verified file is renamed
/// into the cache).
async fn receive_verified<R: tokio::io::AsyncRead + Unpin>(
    body: &mut R,
    tmp: &std::path::Path,
    sha256: &str,
    size: u64,
) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::create(tmp).await?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
        anyhow::ensure!(got <= size, "the control plane sent more than {size} bytes");
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
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
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_asked_content_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("part");
        let body = b"the right audio bytes".to_vec();
        let sha = hex::encode(Sha256::digest(&body));
        let size = body.len() as u64;
        receive_verified(&mut body.as_slice(), &tmp, &sha, size)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&tmp).unwrap(), body);
        // Same size, other content: the hash check refuses it.
        let forged = b"the wrong audio bytes".to_vec();
        assert_eq!(forged.len(), body.len());
        let err = receive_verified(&mut forged.as_slice(), &tmp, &sha, size)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("hashes to"), "{err}");
        // Cut short, or longer than announced.
        let err = receive_verified(&mut &body[..5], &tmp, &sha, size)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ended after 5"), "{err}");
        let long = [body.as_slice(), b"!"].concat();
        let err = receive_verified(&mut long.as_slice(), &tmp, &sha, size)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }
}

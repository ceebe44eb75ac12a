//! The node's identity: joining with a token (key generated here, only a certificate request
//! leaves the machine), and the files that keep it (`identity.json`, readable by its owner only)
//! and the last desired state (`desired.json`, so a restarted node serves what it served before
//! it reaches a control plane).

use anyhow::Context as _;
use onda_shared::cluster::proto::{
    self, ControlMessage, DesiredState, MAX_VERSION, MIN_VERSION, NodeAdvert, NodeMessage,
};
use onda_shared::cluster::tls;
use onda_shared::cluster::token::JoinToken;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join("identity.json")
}

pub fn load(dir: &Path) -> anyhow::Result<Option<Identity>> {
    let path = identity_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is damaged; remove it and join again", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with owner-only permissions.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn save_desired(dir: &Path, desired: &DesiredState) -> anyhow::Result<()> {
    write_private(&dir.join("desired.json"), &serde_json::to_vec(desired)?)
}

pub fn load_desired(dir: &Path) -> Option<DesiredState> {
    let text = std::fs::read_to_string(dir.join("desired.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Joins the cluster through the first control plane that answers.
pub async fn join(
    token: &JoinToken,
    addrs: &[SocketAddr],
    advert: &NodeAdvert,
) -> anyhow::Result<Identity> {
    let key = rcgen::KeyPair::generate().context("cannot generate the node key")?;
    let csr = rcgen::CertificateParams::new(vec![advert.name.clone()])?
        .serialize_request(&key)
        .context("cannot make the certificate request")?
        .pem()?;
    let mut last = None;
    for addr in addrs {
        match join_one(token, *addr, advert, &csr).await {
            Ok((node_id, cert_pem, ca_pem)) => {
                // The certificate must chain to the pinned CA, or the control plane lied.
                let ca = tls::certs_from_pem(&ca_pem)?;
                anyhow::ensure!(
                    tls::sha256_hex(&ca[0]) == token.ca_sha256,
                    "the control plane answered with a CA that is not the one the token pins"
                );
                return Ok(Identity {
                    node_id,
                    cert_pem,
                    key_pem: key.serialize_pem(),
                    ca_pem,
                });
            }
            Err(JoinError::Refused(msg)) => {
                anyhow::bail!("the control plane refused to join: {msg}")
            }
            Err(JoinError::Pin(msg)) => anyhow::bail!("{msg}"),
            Err(JoinError::Other(e)) => {
                tracing::warn!("joining through {addr}: {e:#}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no control plane address")))
        .context("cannot reach any control plane to join")
}

enum JoinError {
    Refused(String),
    Pin(String),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for JoinError {
    fn from(e: E) -> Self {
        JoinError::Other(e.into())
    }
}

async fn join_one(
    token: &JoinToken,
    addr: SocketAddr,
    advert: &NodeAdvert,
    csr_pem: &str,
) -> Result<(String, String, String), JoinError> {
    let mismatch = Arc::new(Mutex::new(None));
    let cfg =
        tls::client_config_pinned(&token.ca_sha256, mismatch.clone(), Duration::from_secs(10))?;
    let endpoint = crate::session::client_endpoint(addr)?;
    let pin_problem = || mismatch.lock().ok().and_then(|m| m.clone());
    let conn = match endpoint.connect_with(cfg, addr, tls::SERVER_NAME)?.await {
        Ok(c) => c,
        Err(e) => {
            return Err(match pin_problem() {
                Some(why) => JoinError::Pin(why),
                None => JoinError::Other(anyhow::anyhow!("cannot connect to {addr}: {e}")),
            });
        }
    };
    let result = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        proto::write_frame(
            &mut send,
            &NodeMessage::Join {
                min_version: MIN_VERSION,
                max_version: MAX_VERSION,
                token_id: token.id.clone(),
                token_secret: token.secret.clone(),
                csr_pem: csr_pem.to_string(),
                node: advert.clone(),
            },
        )
        .await?;
        let answer: Option<ControlMessage> =
            tokio::time::timeout(Duration::from_secs(15), proto::read_frame(&mut recv))
                .await
                .map_err(|_| anyhow::anyhow!("no answer to the join within 15 s"))??;
        match answer {
            Some(ControlMessage::Joined {
                node_id,
                cert_pem,
                ca_pem,
            }) => Ok((node_id, cert_pem, ca_pem)),
            Some(ControlMessage::Refused { code, message }) => {
                Err(JoinError::Refused(format!("{message} ({code:?})")))
            }
            Some(other) => Err(JoinError::Other(anyhow::anyhow!(
                "unexpected answer to a join: {other:?}"
            ))),
            None => Err(JoinError::Other(anyhow::anyhow!(
                "the control plane closed the connection without answering"
            ))),
        }
    }
    .await;
    conn.close(0u32.into(), b"joined");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    if let Some(why) = pin_problem() {
        return Err(JoinError::Pin(why));
    }
    result
}

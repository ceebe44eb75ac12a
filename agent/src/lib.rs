//! The Onda node daemon: joins the cluster over QUIC, applies desired state to an in-process edge
//! node, syncs media, spools usage. It arrives with the cluster issue; until then `onda agent`
//! says so.
#![forbid(unsafe_code)]

/// `onda agent`: not built yet.
pub async fn run() -> anyhow::Result<()> {
    anyhow::bail!(
        "`onda agent` (a cluster node) is not built yet: it arrives with the cluster issue"
    )
}

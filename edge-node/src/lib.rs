//! The Onda edge node: the data plane every listener touches (Icecast-compatible server, fan-out,
//! AutoDJ, RTMP ingest, HLS). It takes a typed configuration and knows nothing of QUIC or the
//! control plane. The server itself arrives with its issue; until then `onda edge` says so.
#![forbid(unsafe_code)]

/// `onda edge`: not built yet.
pub async fn run() -> anyhow::Result<()> {
    anyhow::bail!(
        "`onda edge` (the standalone Icecast-compatible edge node) is not built yet: it arrives with the edge-node issue"
    )
}

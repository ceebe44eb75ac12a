//! A node that speaks the control protocol by hand, for tests of what the control plane trusts a
//! node with: joins with any CSR, and a joined session that sends what the test says (usage
//! reports, media requests, track reports) instead of what an agent would.

use onda_shared::cluster::proto::{
    self, ControlMessage, DesiredState, Heartbeat, HostMetrics, MediaReply, MediaRequest,
    NodeAdvert, NodeMessage,
};
use onda_shared::cluster::tls;
use onda_shared::cluster::token::JoinToken;
use std::net::SocketAddr;
use std::time::Duration;

/// An advert that passes the control plane's checks.
pub fn advert(name: &str) -> NodeAdvert {
    NodeAdvert {
        name: name.to_string(),
        region: "test".to_string(),
        labels: Default::default(),
        edge_url: "http://127.0.0.1:9".to_string(),
        rtmp_url: String::new(),
        turn_urls: Vec::new(),
        capacity_listeners: 1000,
        capacity_mbps: 1000,
    }
}

/// A QUIC connection to the control plane with `cfg`, and its one bidirectional stream.
async fn open(
    quic: SocketAddr,
    cfg: quinn::ClientConfig,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let endpoint = onda_agent::session::client_endpoint(quic).expect("endpoint");
    let conn = endpoint
        .connect_with(cfg, quic, tls::SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    let (send, recv) = conn.open_bi().await.expect("stream");
    (endpoint, conn, send, recv)
}

/// Sends one join with `token` and `csr_pem` as given; returns the control plane's answer.
pub async fn raw_join(quic: SocketAddr, token: &JoinToken, csr_pem: &str) -> ControlMessage {
    let mismatch = std::sync::Arc::new(std::sync::Mutex::new(None));
    let cfg = tls::client_config_pinned(&token.ca_sha256, mismatch, Duration::from_secs(10))
        .expect("client config");
    let (_endpoint, conn, mut send, mut recv) = open(quic, cfg).await;
    let join = NodeMessage::Join {
        min_version: proto::MIN_VERSION,
        max_version: proto::MAX_VERSION,
        token_id: token.id.clone(),
        token_secret: token.secret.clone(),
        csr_pem: csr_pem.to_string(),
        node: advert("raw-join"),
    };
    proto::write_frame(&mut send, &join).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(15), proto::read_frame(&mut recv))
        .await
        .expect("an answer within 15 s")
        .expect("a frame")
        .expect("not closed");
    conn.close(0u32.into(), b"done");
    answer
}

/// A joined node's session, driven by the test.
pub struct RogueNode {
    pub node_id: String,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

impl RogueNode {
    /// Joins with `token` (a real CSR, as an agent makes) and opens a session.
    pub async fn join(quic: SocketAddr, token: &str, name: &str) -> RogueNode {
        Self::join_as(quic, token, advert(name)).await
    }

    /// As [`RogueNode::join`], with the node's advert as given (labels, capacity).
    pub async fn join_as(quic: SocketAddr, token: &str, ad: NodeAdvert) -> RogueNode {
        let token: JoinToken = token.parse().expect("token");
        let id = onda_agent::identity::join(&token, &[quic], &ad)
            .await
            .expect("join");
        let ca = tls::certs_from_pem(&id.ca_pem).expect("ca")[0].clone();
        let cfg = tls::client_config_mtls(
            ca,
            tls::certs_from_pem(&id.cert_pem).expect("cert"),
            tls::key_from_pem(&id.key_pem).expect("key"),
            Duration::from_secs(10),
        )
        .expect("mtls");
        let (endpoint, conn, mut send, mut recv) = open(quic, cfg).await;
        let hello = NodeMessage::Hello {
            min_version: proto::MIN_VERSION,
            max_version: proto::MAX_VERSION,
            software: "rogue".to_string(),
            node: ad,
            applied_generation: 0,
        };
        proto::write_frame(&mut send, &hello).await.expect("hello");
        let welcome: ControlMessage = proto::read_frame(&mut recv)
            .await
            .expect("welcome frame")
            .expect("welcome");
        assert!(
            matches!(welcome, ControlMessage::Welcome { .. }),
            "{welcome:?}"
        );
        RogueNode {
            node_id: id.node_id,
            conn,
            send,
            recv,
            _endpoint: endpoint,
        }
    }

    /// Sends heartbeats (so the node stays alive) until a desired state naming the station or
    /// stream `id` arrives, acknowledging every desired state; returns that one.
    pub async fn wait_carrying(&mut self, id: &str) -> DesiredState {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut beat = tokio::time::interval(Duration::from_millis(150));
        loop {
            let frame = {
                // One read in flight across heartbeats: a frame is never cut in two.
                let read = proto::read_frame::<_, ControlMessage>(&mut self.recv);
                tokio::pin!(read);
                loop {
                    tokio::select! {
                        r = &mut read => break r,
                        _ = beat.tick() => {
                            let hb = NodeMessage::Heartbeat(Heartbeat {
                                host: HostMetrics::default(),
                                mounts: Vec::new(),
                                rejected: Vec::new(),
                            });
                            proto::write_frame(&mut self.send, &hb).await.expect("heartbeat");
                            assert!(tokio::time::Instant::now() < deadline, "{id} was never given to the node");
                        }
                    }
                }
            };
            if let Some(ControlMessage::Desired(d)) = frame.expect("a frame") {
                let ack = NodeMessage::Ack {
                    generation: d.generation,
                    error: None,
                };
                proto::write_frame(&mut self.send, &ack).await.expect("ack");
                if d.carries(id) {
                    return d;
                }
            }
        }
    }

    pub async fn send(&mut self, msg: &NodeMessage) {
        proto::write_frame(&mut self.send, msg)
            .await
            .expect("send a frame");
    }

    /// The next control message that is not a desired state (those are not what tests wait
    /// for); None when the control plane ended the session.
    pub async fn next(&mut self) -> Option<ControlMessage> {
        loop {
            let msg =
                tokio::time::timeout(Duration::from_secs(15), proto::read_frame(&mut self.recv))
                    .await
                    .expect("a control message within 15 s")
                    .ok()??;
            if !matches!(msg, ControlMessage::Desired(_)) {
                return Some(msg);
            }
        }
    }

    /// Asks for a media file by hash: its bytes, or the control plane's refusal.
    pub async fn fetch(&self, sha256: &str) -> Result<Vec<u8>, String> {
        let (mut send, mut recv) = self.conn.open_bi().await.expect("media stream");
        let req = MediaRequest {
            sha256: sha256.to_string(),
        };
        proto::write_frame(&mut send, &req).await.expect("request");
        let _ = send.finish();
        match proto::read_frame::<_, MediaReply>(&mut recv).await {
            Ok(Some(MediaReply::Found { size_bytes })) => {
                let body = recv
                    .read_to_end(usize::try_from(size_bytes).unwrap_or(usize::MAX))
                    .await
                    .map_err(|e| e.to_string())?;
                assert_eq!(body.len() as u64, size_bytes);
                Ok(body)
            }
            Ok(Some(MediaReply::NotFound { message })) => Err(message),
            other => Err(format!("{other:?}")),
        }
    }
}

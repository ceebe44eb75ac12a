//! A hand-driven RTMP client for tests: a real handshake and session (rml_rtmp's client) up to
//! an accepted publish, and crafted chunks that no encoder sends.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One chunk with a type 0 header: chunk stream `csid` (2..=63), AMF0 command (type 20) on
/// message stream 0, declaring `declared` bytes and carrying `payload`.
pub fn chunk(csid: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![csid & 0x3f, 0, 0, 0];
    v.extend_from_slice(&declared.to_be_bytes()[1..]);
    v.push(20);
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(payload);
    v
}

/// rml_rtmp 0.8's first panic: a message on one chunk stream left partial (one full chunk of
/// `chunk_size` bytes sent), then a message starting on another chunk stream, shorter than
/// what the first has so far (usize underflow in the chunk deserializer).
pub fn interleaved_chunk_streams(chunk_size: u32) -> Vec<u8> {
    let mut v = chunk(10, chunk_size + 100, &vec![0u8; chunk_size as usize]);
    v.extend(chunk(11, 10, &[0u8; 10]));
    v
}

/// rml_rtmp 0.8's second panic: an AMF0 command message of one value (the string "connect")
/// where the command decoder takes three without looking.
pub fn short_amf0_command() -> Vec<u8> {
    let mut amf = vec![0x02, 0, 7];
    amf.extend_from_slice(b"connect");
    chunk(3, amf.len() as u32, &amf)
}

/// A connection that did the RTMP handshake with a server.
pub struct RawRtmp {
    pub stream: TcpStream,
    leftover: Vec<u8>,
}

async fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the server answers within 10 s")
        .expect("read");
    assert!(n > 0, "the server closed the connection");
    buf.truncate(n);
    buf
}

impl RawRtmp {
    /// Connects to `addr` (`HOST:PORT`) and completes the handshake.
    pub async fn connect(addr: &str) -> RawRtmp {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut hs = Handshake::new(PeerType::Client);
        let c0c1 = hs.generate_outbound_p0_and_p1().expect("c0c1");
        stream.write_all(&c0c1).await.expect("write");
        loop {
            let got = read_some(&mut stream).await;
            match hs.process_bytes(&got).expect("handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).await.expect("write");
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    stream.write_all(&response_bytes).await.expect("write");
                    return RawRtmp {
                        stream,
                        leftover: remaining_bytes,
                    };
                }
            }
        }
    }

    async fn send(&mut self, results: Vec<ClientSessionResult>) -> Vec<ClientSessionEvent> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => {
                    self.stream.write_all(&p.bytes).await.expect("write");
                }
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        events
    }

    /// Connects to app `live` and publishes `key` (as OBS and ffmpeg do), until the server
    /// accepts the publish; panics if it refuses.
    pub async fn publish(&mut self, key: &str) {
        let (mut session, initial) =
            ClientSession::new(ClientSessionConfig::new()).expect("session");
        self.send(initial).await;
        let req = session
            .request_connection("live".to_string())
            .expect("connect request");
        self.send(vec![req]).await;
        let mut input = std::mem::take(&mut self.leftover);
        loop {
            let results = session.handle_input(&input).expect("server input");
            for e in self.send(results).await {
                match e {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let req = session
                            .request_publishing(key.to_string(), PublishRequestType::Live)
                            .expect("publish request");
                        self.send(vec![req]).await;
                    }
                    ClientSessionEvent::PublishRequestAccepted => return,
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        panic!("connect refused: {description}")
                    }
                    _ => {}
                }
            }
            input = read_some(&mut self.stream).await;
        }
    }

    /// Sends `bytes` and reads until the server closes the connection (at most 10 s).
    pub async fn send_and_wait_close(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let mut buf = vec![0u8; 65536];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server did not close the connection");
    }
}

//! The HTTP server's open TCP connections, each of which can be cut from outside by its peer
//! address (what a request's `ConnectInfo<SocketAddr>` holds). The accept loop (`lanes`)
//! registers every connection it takes.
//!
//! The gateway needs it for a client that does not read: socketioxide closes a socket only by
//! queueing a packet for it (which a full queue refuses), and engineioxide's writer waits on
//! the blocked TCP send without ever giving up, so neither can end that connection. Cutting the
//! stream under them can: a cut connection fails its pending and later reads and writes, the
//! engine ends the session, and the socket's disconnect handler runs as for any lost client.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The open connections of one server, by peer address.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    open: Arc<Mutex<HashMap<SocketAddr, (u64, CancellationToken)>>>,
    next: Arc<AtomicU64>,
}

impl Connections {
    /// Registers an accepted connection; it leaves the registry when the stream is dropped.
    pub fn track(&self, stream: TcpStream, peer: SocketAddr) -> Cuttable {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cut = CancellationToken::new();
        onda_shared::sync::lock(&self.open).insert(peer, (id, cut.clone()));
        Cuttable {
            inner: stream,
            read_cut: Box::pin(cut.clone().cancelled_owned()),
            write_cut: Box::pin(cut.cancelled_owned()),
            entry: Some((self.clone(), peer, id)),
        }
    }

    /// Cuts the connection from `peer`; false if there is none (it already ended).
    pub fn cut(&self, peer: SocketAddr) -> bool {
        match onda_shared::sync::lock(&self.open).get(&peer) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn forget(&self, peer: SocketAddr, id: u64) {
        let mut open = onda_shared::sync::lock(&self.open);
        // A later connection from the same address (a reused port) keeps its entry.
        if open.get(&peer).is_some_and(|(i, _)| *i == id) {
            open.remove(&peer);
        }
    }
}

/// A TCP stream that fails every read and write once it is cut, waking a read or write that
/// waits on the network. Reads and writes are polled by different tasks once a WebSocket is
/// split, so each has its own wait for the cut.
pub struct Cuttable {
    inner: TcpStream,
    read_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    write_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    entry: Option<(Connections, SocketAddr, u64)>,
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the server cut this connection",
    )
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        if let Some((registry, peer, id)) = self.entry.take() {
            registry.forget(peer, id);
        }
    }
}

impl AsyncRead for Cuttable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_cut_wakes_a_blocked_read_and_fails_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        let conns = Connections::default();
        let mut stream = conns.track(server, peer);
        // The client sends nothing: this read waits on the network until the cut.
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let r = stream.read(&mut buf).await;
            (r.map_err(|e| e.kind()), stream)
        });
        tokio::task::yield_now().await;
        assert!(conns.cut(peer));
        let (read, mut stream) = tokio::time::timeout(std::time::Duration::from_secs(5), reading)
            .await
            .expect("woken by the cut")
            .expect("task");
        assert_eq!(read, Err(io::ErrorKind::ConnectionAborted));
        let write = stream.write_all(b"x").await.map_err(|e| e.kind());
        assert_eq!(write, Err(io::ErrorKind::ConnectionAborted));
        drop(stream);
        assert!(!conns.cut(peer), "gone from the registry once dropped");
        drop(client);
    }
}

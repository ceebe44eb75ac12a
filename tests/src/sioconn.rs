//! One Socket.io client as a script would drive it: emit an event and await its ack, await the
//! next event of a name. The load generator of `bench-calls`, where each call is a little
//! conversation (initiate, accept, offer, answer, candidates, hang up) between two clients,
//! which the fire-and-count [`crate::sioload::Pool`] cannot express. Engine.IO v4 / Socket.IO v5
//! over a plain WebSocket (tokio-tungstenite), as `sioload` speaks it; a reader task answers
//! pings, routes acks to their waiters and queues events.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct Conn {
    out: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    /// Events read while awaiting another.
    early: VecDeque<(String, Value)>,
    acks: Acks,
    next_ack: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    /// Connects to the gateway at `base` (`http://host:port`) with `auth: { token }`.
    pub async fn connect(base: &str, token: &str, within: Duration) -> Result<Conn, String> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http://", "ws://", 1)
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = tokio::time::timeout(
            within,
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
        )
        .await
        .map_err(|_| "no WebSocket in time".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let hello = format!("40{}", json!({ "token": token }));
        let accepted = tokio::time::timeout(within, async {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let reply = match text.as_str() {
                    t if t.starts_with("40") => return Ok(()),
                    t if t.starts_with("44") => return Err(format!("refused: {t}")),
                    t if t.starts_with('0') => hello.clone(),
                    "2" => "3".to_string(),
                    _ => continue,
                };
                sink.send(Message::text(reply))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Err("the connection ended during the handshake".to_string())
        })
        .await
        .map_err(|_| "no CONNECT answer in time".to_string())?;
        accepted?;
        let (out, mut to_send) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = to_send.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let (events_tx, events) = mpsc::unbounded_channel();
        let acks: Acks = Arc::default();
        let (acks_r, pong) = (acks.clone(), out.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                route(text.as_str(), (&pong, &acks_r, &events_tx));
            }
        });
        Ok(Conn {
            out,
            events,
            early: VecDeque::new(),
            acks,
            next_ack: 0,
        })
    }

    /// Sends `event` with `payload` and waits (at most `within`) for its ack's first argument.
    pub async fn emit(
        &mut self,
        event: &str,
        payload: Value,
        within: Duration,
    ) -> Result<Value, String> {
        let id = self.next_ack;
        self.next_ack += 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.acks).insert(id, tx);
        self.out
            .send(format!("42{id}{}", json!([event, payload])))
            .map_err(|_| "the connection is closed".to_string())?;
        tokio::time::timeout(within, rx)
            .await
            .map_err(|_| format!("no ack to {event} in {within:?}"))?
            .map_err(|_| "the connection closed before the ack".to_string())
    }

    /// Sends `event` without asking for an ack.
    pub fn send(&self, event: &str, payload: Value) {
        let _ = self.out.send(format!("42{}", json!([event, payload])));
    }

    /// The first argument of the next `event` (earlier events of other names are kept).
    pub async fn event(&mut self, event: &str, within: Duration) -> Result<Value, String> {
        self.event_where(event, |_| true, within).await
    }

    /// The first argument of the next `event` whose payload satisfies `accept`.
    pub async fn event_where(
        &mut self,
        event: &str,
        accept: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Result<Value, String> {
        if let Some(at) = self
            .early
            .iter()
            .position(|(name, v)| name == event && accept(v))
        {
            return Ok(self.early.remove(at).map(|(_, v)| v).unwrap_or_default());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((name, v))) if name == event && accept(&v) => return Ok(v),
                Ok(Some(other)) => self.early.push_back(other),
                Ok(None) => return Err(format!("the connection closed awaiting {event}")),
                Err(_) => return Err(format!("no {event} in {within:?}")),
            }
        }
    }
}

/// One packet from the server: a ping answered, an ack to its waiter, an event queued.
fn route(
    text: &str,
    (pong, acks, events): (
        &mpsc::UnboundedSender<String>,
        &Acks,
        &mpsc::UnboundedSender<(String, Value)>,
    ),
) {
    if text == "2" {
        let _ = pong.send("3".to_string());
    } else if let Some(rest) = text.strip_prefix("43") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (Ok(id), Ok(Value::Array(args))) = (
            rest[..digits].parse::<u64>(),
            serde_json::from_str::<Value>(&rest[digits..]),
        ) else {
            return;
        };
        if let Some(waiter) = lock(acks).remove(&id) {
            let _ = waiter.send(args.into_iter().next().unwrap_or_default());
        }
    } else if let Some(rest) = text.strip_prefix("42")
        && let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(rest)
        && !args.is_empty()
    {
        let name = args.remove(0).as_str().unwrap_or_default().to_string();
        let _ = events.send((name, args.into_iter().next().unwrap_or_default()));
    }
}

//! The Socket.io load generator of the realtime benchmark (`bench-realtime`): many clients in
//! one tokio process, each a plain WebSocket (tokio-tungstenite) speaking Engine.IO v4 and
//! Socket.IO v5 on the wire, so one client costs a task and a socket rather than a Node process.
//!
//! On the wire (`/socket.io/?EIO=4&transport=websocket`): the server opens with `0{…}`, the
//! client connects with `40{"token":…}`, the server answers `40{"sid":…}` (or `44{…}`: refused);
//! events are `42["name",payload]`, `42N[…]` asks for ack `N`, answered by `43N[…]`; the server
//! pings with `2` and the client answers `3`.
//!
//! A message the generator sends carries its send time in its content (`bench TAG MICROS`, in
//! microseconds since the generator started), so the client that receives it measures the
//! delivery latency; TAG says which measurement it belongs to, so stragglers of a warm-up are
//! never counted in the window after it.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long a client may take from TCP connect to the server's CONNECT answer.
const HANDSHAKE: Duration = Duration::from_secs(60);

/// The events whose content a client reads as a stamped delivery: the payload's `content`, or
/// its `message.content` (Onda's stream chat, where tips show too).
const DELIVERIES: [&str; 3] = ["receive-message", "stream-message", "chat-message"];

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the generator started: the clock every stamp uses.
fn now_micros() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The content of a stamped message: its tag and send time.
pub fn stamp(tag: u32) -> String {
    format!("bench {tag} {}", now_micros())
}

/// The (tag, send time) of a stamped content.
fn parse_stamp(content: &str) -> Option<(u32, u64)> {
    let mut words = content.strip_prefix("bench ")?.split(' ');
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// What all clients saw. Counters of the measurement are reset by [`Stats::measure`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients whose handshake the server accepted.
    pub connected: AtomicUsize,
    /// Clients the server refused (`44`).
    pub refused: AtomicUsize,
    /// Clients that could not connect at all (TCP, WebSocket or no answer in time).
    pub failed: AtomicUsize,
    /// Connections that ended while the generator still held them.
    pub dropped: AtomicUsize,
    /// Acks of commands sent without a stamp (joins).
    pub joined: AtomicUsize,
    /// Events received that are not stamped deliveries (presence, notifications, …), by name.
    pub other: Mutex<HashMap<String, u64>>,
    /// The tag being measured: only messages carrying it are counted below.
    tag: AtomicU32,
    /// Stamped messages of the measured tag sent, acknowledged `ok`, refused, and delivered.
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub ack_errors: AtomicU64,
    pub delivered: AtomicU64,
    /// Delivery latencies of the measured tag, microseconds.
    latencies: Mutex<Vec<u32>>,
    /// The first thing that went wrong, for the report.
    pub first_error: Mutex<Option<String>>,
}

/// The counters of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub sent: u64,
    pub acked: u64,
    pub ack_errors: u64,
    pub delivered: u64,
    /// Sorted, milliseconds.
    pub latencies_ms: Vec<f64>,
}

impl Stats {
    fn error(&self, what: String) {
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(what);
    }

    /// Starts counting the messages stamped with `tag` (and only those), from zero.
    pub fn measure(&self, tag: u32) {
        self.tag.store(tag, Ordering::SeqCst);
        for c in [&self.sent, &self.acked, &self.ack_errors, &self.delivered] {
            c.store(0, Ordering::SeqCst);
        }
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn measured(&self, tag: u32) -> bool {
        tag != 0 && tag == self.tag.load(Ordering::Relaxed)
    }

    /// The counters of the current measurement.
    pub fn snapshot(&self) -> Measured {
        let mut latencies_ms: Vec<f64> = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&us| f64::from(us) / 1000.0)
            .collect();
        latencies_ms.sort_by(f64::total_cmp);
        Measured {
            sent: self.sent.load(Ordering::SeqCst),
            acked: self.acked.load(Ordering::SeqCst),
            ack_errors: self.ack_errors.load(Ordering::SeqCst),
            delivered: self.delivered.load(Ordering::SeqCst),
            latencies_ms,
        }
    }

    /// How many events named `name` arrived that were not stamped deliveries.
    pub fn other(&self, name: &str) -> u64 {
        self.other
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// What a client is told to send.
#[derive(Debug, Clone)]
pub struct Emit {
    pub event: &'static str,
    pub payload: Value,
    /// Some(tag): the payload's `stamp_field` is set to a stamp with this tag when it is
    /// written.
    pub stamp: Option<u32>,
    /// `content` for messages; `message` for a tip, whose message shows in a chat; empty: the
    /// payload stays as it is (the emit is still counted and its ack measured under the tag).
    pub stamp_field: &'static str,
}

/// Clients, one task each, driven by [`Emit`] commands; dropping the pool closes them.
pub struct Pool {
    clients: Vec<mpsc::UnboundedSender<Emit>>,
    pub stats: Arc<Stats>,
    tasks: tokio::task::JoinSet<()>,
}

impl Pool {
    /// Connects one client per token to the Socket.io server at `base` (`http://host:port`),
    /// `per_second` new connections a second at most. Returns at once; the handshakes go on
    /// in the background ([`Pool::wait_answered`]).
    pub async fn connect(base: &str, tokens: &[String], per_second: usize) -> Pool {
        epoch();
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http://", "ws://", 1)
        );
        let stats = Arc::new(Stats::default());
        let mut tasks = tokio::task::JoinSet::new();
        let mut clients = Vec::with_capacity(tokens.len());
        // Connections start in small batches every 10 ms.
        let batch = (per_second / 100).max(1);
        for (i, token) in tokens.iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            clients.push(tx);
            tasks.spawn(client(url.clone(), token.clone(), stats.clone(), rx));
            if i % batch == batch - 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Pool {
            clients,
            stats,
            tasks,
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Waits until every client is connected, refused or failed, or `timeout` passes; returns
    /// (connected, refused, failed, not answered).
    pub async fn wait_answered(&self, timeout: Duration) -> (usize, usize, usize, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = &self.stats;
            let (c, r, f) = (
                s.connected.load(Ordering::SeqCst),
                s.refused.load(Ordering::SeqCst),
                s.failed.load(Ordering::SeqCst),
            );
            let pending = self.len().saturating_sub(c + r + f);
            if pending == 0 || Instant::now() >= deadline {
                return (c, r, f, pending);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tells client `i` to send `emit` (asking for an ack).
    pub fn emit(&self, i: usize, emit: Emit) {
        // A client whose task ended was counted as dropped already.
        let _ = self.clients[i].send(emit);
    }

    /// Closes every client and waits (at most `timeout`) for their tasks to end.
    pub async fn close(mut self, timeout: Duration) {
        self.clients.clear();
        let _ = tokio::time::timeout(timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// An ack the client waits for: the measured tag of its message, or None for a join.
type Pending = HashMap<u64, Option<u32>>;

/// One client: connect, hand over the token, then answer pings, read events and acks, and send
/// what it is told until the pool drops its sender.
async fn client(
    url: String,
    token: String,
    stats: Arc<Stats>,
    mut rx: mpsc::UnboundedReceiver<Emit>,
) {
    // Small buffers: ten thousand clients share this process, and every packet is small.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let opened = tokio::time::timeout(
        HANDSHAKE,
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await;
    let mut ws = match opened {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            stats.failed.fetch_add(1, Ordering::SeqCst);
            stats.error(format!("connect: {e}"));
            return;
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::SeqCst);
            stats.error("connect: no WebSocket within the handshake timeout".to_string());
            return;
        }
    };
    let hello = format!("40{}", json!({ "token": token }));
    let accepted = tokio::time::timeout(HANDSHAKE, async {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            // The open packet gets the token; a ping its pong.
            let reply = match text.as_str() {
                t if t.starts_with("40") => return Ok(()),
                t if t.starts_with("44") => return Err(format!("refused: {t}")),
                t if t.starts_with('0') => hello.clone(),
                "2" => "3".to_string(),
                _ => continue,
            };
            if ws.send(Message::text(reply)).await.is_err() {
                break;
            }
        }
        Err("the connection ended during the handshake".to_string())
    })
    .await;
    match accepted {
        Ok(Ok(())) => stats.connected.fetch_add(1, Ordering::SeqCst),
        Ok(Err(e)) => {
            let counter = match e.starts_with("refused") {
                true => &stats.refused,
                false => &stats.failed,
            };
            counter.fetch_add(1, Ordering::SeqCst);
            stats.error(e);
            return;
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::SeqCst);
            stats.error("no CONNECT answer within the handshake timeout".to_string());
            return;
        }
    };
    let mut pending = Pending::new();
    let mut next_ack = 0u64;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        stats.dropped.fetch_add(1, Ordering::SeqCst);
                        stats.error(format!("a connection ended: {msg:?}"));
                        return;
                    }
                    Some(Ok(_)) => continue,
                };
                if text.as_str() == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        stats.dropped.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    continue;
                }
                received(text.as_str(), &stats, &mut pending);
            }
            cmd = rx.recv() => {
                let Some(mut emit) = cmd else {
                    let _ = ws.close(None).await;
                    return;
                };
                if let Some(tag) = emit.stamp {
                    if !emit.stamp_field.is_empty() {
                        emit.payload[emit.stamp_field] = Value::String(stamp(tag));
                    }
                    if stats.measured(tag) {
                        stats.sent.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let packet = format!("42{next_ack}{}", json!([emit.event, emit.payload]));
                pending.insert(next_ack, emit.stamp);
                next_ack += 1;
                if ws.send(Message::text(packet)).await.is_err() {
                    stats.dropped.fetch_add(1, Ordering::SeqCst);
                    stats.error("a connection ended while sending".to_string());
                    return;
                }
            }
        }
    }
}

/// The name of an event packet's body (`["name",…]`).
fn event_name(body: &str) -> Option<&str> {
    let rest = body.strip_prefix("[\"")?;
    Some(&rest[..rest.find('"')?])
}

/// The stamp in an event's content (`"content":"bench TAG MICROS"`), found without decoding the
/// packet: the generator reads up to 250,000 packets a second on the cores the server under
/// test uses, and building a JSON value of each was a quarter of its CPU (perf, bench-live-chat).
/// Only the generator's own stamps are looked for, and a JSON string holding one has no escapes.
fn stamp_in(body: &str) -> Option<(u32, u64)> {
    const KEY: &str = "\"content\":\"";
    let at = body.find("\"content\":\"bench ")?;
    let rest = &body[at + KEY.len()..];
    parse_stamp(&rest[..rest.find('"')?])
}

/// Counts one Socket.io packet from the server: an event (a stamped delivery or another
/// event) or an ack. Events other than deliveries are decoded whole, so a malformed one shows.
fn received(text: &str, stats: &Stats, pending: &mut Pending) {
    if let Some(rest) = text.strip_prefix("42") {
        let name = event_name(rest).unwrap_or_default();
        let stamped = match DELIVERIES.contains(&name) {
            true => stamp_in(rest),
            false => None,
        };
        match stamped {
            Some((tag, sent)) => {
                if stats.measured(tag) {
                    let us = now_micros().saturating_sub(sent);
                    stats.delivered.fetch_add(1, Ordering::SeqCst);
                    stats
                        .latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            None => {
                if !matches!(serde_json::from_str::<Value>(rest), Ok(Value::Array(a)) if !a.is_empty())
                {
                    stats.error(format!("an event that is not a JSON array: {text:.200}"));
                    return;
                }
                *stats
                    .other
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name.to_string())
                    .or_default() += 1;
            }
        }
    } else if let Some(rest) = text.strip_prefix("43") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(id) = rest[..digits].parse::<u64>() else {
            stats.error(format!("an ack without an id: {text:.200}"));
            return;
        };
        let Some(tag) = pending.remove(&id) else {
            stats.error(format!("an ack nobody asked for: {text:.200}"));
            return;
        };
        let body: Value = serde_json::from_str(&rest[digits..]).unwrap_or(Value::Null);
        let ok = body[0]["ok"] == json!(true);
        match tag {
            None if ok => {
                stats.joined.fetch_add(1, Ordering::SeqCst);
            }
            None => stats.error(format!("a join refused: {text:.300}")),
            Some(tag) if stats.measured(tag) => {
                if ok {
                    stats.acked.fetch_add(1, Ordering::SeqCst);
                } else {
                    stats.ack_errors.fetch_add(1, Ordering::SeqCst);
                    stats.error(format!("a message refused: {text:.300}"));
                }
            }
            Some(_) if !ok => stats.error(format!("a message refused: {text:.300}")),
            Some(_) => {}
        }
    } else if text.starts_with("41") || text == "1" {
        stats.error(format!("the server ended the session: {text}"));
    }
}

/// The value at quantile `p` (0–1) of sorted `v`; NaN when empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_its_tag_and_time() {
        let s = stamp(7);
        let (tag, at) = parse_stamp(&s).expect("a stamp");
        assert_eq!(tag, 7);
        assert!(at <= now_micros());
        assert_eq!(parse_stamp("hello 7 12"), None);
        assert_eq!(parse_stamp("bench x 12"), None);
    }

    fn first_error_has(stats: &Stats, text: &str) -> bool {
        let first = stats.first_error.lock().expect("lock");
        first.as_deref().is_some_and(|e| e.contains(text))
    }

    #[test]
    fn acks_and_deliveries_count_only_for_the_measured_tag() {
        let stats = Stats::default();
        stats.measure(2);
        let mut pending = Pending::from([(0, Some(2)), (1, Some(1)), (2, None), (3, Some(2))]);
        received(r#"430[{"ok":true,"id":"m1"}]"#, &stats, &mut pending);
        received(r#"431[{"ok":true}]"#, &stats, &mut pending);
        received(r#"432[{"ok":true}]"#, &stats, &mut pending);
        received(
            r#"433[{"error":{"code":"rate_limited","message":"wait"}}]"#,
            &stats,
            &mut pending,
        );
        let content = |tag: u32| format!("bench {tag} 0");
        for tag in [2, 1] {
            let event = json!(["receive-message", {"content": content(tag)}]);
            received(&format!("42{event}"), &stats, &mut pending);
        }
        received(
            r#"42["notification",{"unreadCount":1}]"#,
            &stats,
            &mut pending,
        );
        let m = stats.snapshot();
        assert_eq!((m.acked, m.ack_errors, m.delivered), (1, 1, 1));
        assert_eq!(m.latencies_ms.len(), 1);
        assert_eq!(stats.joined.load(Ordering::SeqCst), 1);
        assert_eq!(stats.other("notification"), 1);
        assert!(pending.is_empty());
        assert!(first_error_has(&stats, "rate_limited"));
    }

    #[test]
    fn a_stamp_is_found_in_a_delivery_without_decoding_it() {
        let chat = json!(["chat-message", {"streamId": "s", "message": {"id": "chm_1", "content": "bench 3 77", "kind": "tip"}}]);
        let body = chat.to_string();
        assert_eq!(event_name(&body), Some("chat-message"));
        assert_eq!(stamp_in(&body), Some((3, 77)));
        let plain = json!(["receive-message", {"content": "hello \"bench 1 2\""}]).to_string();
        assert_eq!(stamp_in(&plain), None);
        assert_eq!(event_name("{}"), None);
        // A stamped content in an event that is not a delivery counts as another event.
        let stats = Stats::default();
        stats.measure(3);
        let mut pending = Pending::new();
        received(
            &format!("42{}", json!(["notification", {"content": "bench 3 1"}])),
            &stats,
            &mut pending,
        );
        received(&format!("42{body}"), &stats, &mut pending);
        received("42[not json", &stats, &mut pending);
        assert_eq!(stats.snapshot().delivered, 1);
        assert_eq!(stats.other("notification"), 1);
        assert!(first_error_has(&stats, "not a JSON array"));
    }

    #[test]
    fn percentiles_of_a_sorted_list() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}

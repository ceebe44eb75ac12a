//! Socket.io clients for the gateway tests: the official `socket.io-client` in a Node process
//! (tests/browser/sio.mjs) driven over its stdin and stdout, holding any number of named
//! sockets. The process is killed when the driver is dropped.

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// How long a command or an awaited event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The driver's command for one `(client, event, data)` emit (its id is set when it is sent).
fn emit_command((client, event, data): (&str, &str, Value)) -> Value {
    json!({"op": "emit", "client": client, "event": event, "data": data})
}

pub struct Sio {
    url: String,
    _child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Events read while waiting for something else.
    seen: VecDeque<Value>,
    next_id: u64,
}

impl Sio {
    /// A driver for the gateway at `url` (the control plane's base URL).
    pub async fn start(url: &str) -> Sio {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
        assert!(
            dir.join("node_modules/socket.io-client").is_dir(),
            "socket.io-client is installed: run scripts/install-deps.sh test"
        );
        let mut child = Command::new("node")
            .arg("sio.mjs")
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value =
                    serde_json::from_str(&line).unwrap_or_else(|_| json!({ "unparsed": line }));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Sio {
            url: url.to_string(),
            _child: child,
            stdin,
            lines,
            seen: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Sends `cmd` and waits for its answer, keeping the events that arrive meanwhile.
    async fn call(&mut self, mut cmd: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        let line = format!("{cmd}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("driver takes commands");
        let deadline = tokio::time::Instant::now() + WAIT + Duration::from_secs(2);
        loop {
            let value = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no answer to {cmd}"))
                .unwrap_or_else(|| panic!("the driver exited during {cmd}"));
            if value["id"] == json!(id) {
                return value;
            }
            self.seen.push_back(value);
        }
    }

    /// Connects socket `client` with `auth: { token }`; the connect error's message if refused.
    pub async fn connect(&mut self, client: &str, token: &str) -> Result<(), String> {
        let url = self.url.clone();
        self.connect_with(client, json!({ "url": url, "token": token }))
            .await
    }

    /// Connects socket `client` with the given handshake `auth` object.
    pub async fn connect_auth(&mut self, client: &str, auth: Value) -> Result<(), String> {
        let url = self.url.clone();
        self.connect_with(client, json!({ "url": url, "auth": auth }))
            .await
    }

    async fn connect_with(&mut self, client: &str, mut cmd: Value) -> Result<(), String> {
        cmd["op"] = json!("connect");
        cmd["client"] = json!(client);
        let r = self.call(cmd).await;
        match r["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }

    /// Emits `event` with `data` from `client` and returns its ack.
    pub async fn emit(&mut self, client: &str, event: &str, data: Value) -> Value {
        let r = self
            .call(json!({"op": "emit", "client": client, "event": event, "data": data}))
            .await;
        assert!(r["error"].is_null(), "{event} from {client}: {r}");
        r["ack"].clone()
    }

    /// Emits every `(client, event, data)` at once (the driver runs its commands concurrently)
    /// and returns their acks in the same order.
    pub async fn emit_all(&mut self, emits: &[(&str, &str, Value)]) -> Vec<Value> {
        let cmds = emits.iter().map(|e| emit_command(e.clone())).collect();
        let answers = self.run_all(cmds).await;
        emits
            .iter()
            .zip(answers)
            .map(|(emit, value)| {
                assert!(value["error"].is_null(), "{emit:?}: {value}");
                value["ack"].clone()
            })
            .collect()
    }

    /// Emits `before`, reconnects `client` (as [`Sio::reconnect`]) and emits `after`, all at
    /// once, so the reconnect happens while those events are being stored and sent. Returns the
    /// reconnect's outcome and the emits' acks, in order.
    pub async fn reconnect_amid(
        &mut self,
        client: &str,
        before: &[(&str, &str, Value)],
        after: &[(&str, &str, Value)],
    ) -> (Result<(), String>, Vec<Value>) {
        let mut cmds: Vec<Value> = before.iter().map(|e| emit_command(e.clone())).collect();
        cmds.push(json!({"op": "reconnect", "client": client}));
        cmds.extend(after.iter().map(|e| emit_command(e.clone())));
        let mut answers = self.run_all(cmds).await;
        let reconnected = answers.remove(before.len());
        let acks = before
            .iter()
            .chain(after)
            .zip(answers)
            .map(|(emit, value)| {
                assert!(value["error"].is_null(), "{emit:?}: {value}");
                value["ack"].clone()
            })
            .collect();
        let reconnected = match reconnected["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        };
        (reconnected, acks)
    }

    /// Writes every command at once (the driver runs them concurrently) and returns their
    /// answers in the same order.
    async fn run_all(&mut self, cmds: Vec<Value>) -> Vec<Value> {
        let first = self.next_id;
        let count = cmds.len();
        for mut cmd in cmds {
            cmd["id"] = json!(self.next_id);
            self.next_id += 1;
            self.stdin
                .write_all(format!("{cmd}\n").as_bytes())
                .await
                .expect("driver takes commands");
        }
        let mut answers: Vec<Option<Value>> = vec![None; count];
        let deadline = tokio::time::Instant::now() + WAIT + Duration::from_secs(2);
        while answers.iter().any(Option::is_none) {
            let value = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("not every command was answered: {answers:?}"))
                .expect("the driver runs");
            let slot = value["id"]
                .as_u64()
                .and_then(|id| id.checked_sub(first))
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < count);
            match slot {
                Some(i) => answers[i] = Some(value),
                None => self.seen.push_back(value),
            }
        }
        answers.into_iter().flatten().collect()
    }

    /// Emits `event` with these exact arguments (none, or several) and returns its ack.
    pub async fn emit_args(&mut self, client: &str, event: &str, args: Value) -> Value {
        let r = self
            .call(json!({"op": "emit", "client": client, "event": event, "args": args}))
            .await;
        assert!(r["error"].is_null(), "{event} from {client}: {r}");
        r["ack"].clone()
    }

    /// Emits `event` without asking for an ack.
    pub async fn send(&mut self, client: &str, event: &str, data: Value) {
        self.call(json!({"op": "send", "client": client, "event": event, "data": data}))
            .await;
    }

    /// Writes a raw engine.io packet on `client`'s connection.
    pub async fn raw(&mut self, client: &str, packet: &str) {
        self.call(json!({"op": "raw", "client": client, "packet": packet}))
            .await;
    }

    pub async fn close(&mut self, client: &str) {
        self.call(json!({"op": "close", "client": client})).await;
    }

    /// Loses `client`'s connection (its engine closes, as when a network drops) and waits for
    /// its `disconnect`; it stays down until [`Sio::reconnect`].
    pub async fn drop_connection(&mut self, client: &str) {
        let r = self.call(json!({"op": "drop", "client": client})).await;
        assert!(r["error"].is_null(), "drop {client}: {r}");
    }

    /// Reconnects `client` as socket.io-client does after a drop: its handshake carries the
    /// newest offset it saw.
    pub async fn reconnect(&mut self, client: &str) -> Result<(), String> {
        let r = self
            .call(json!({"op": "reconnect", "client": client}))
            .await;
        match r["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }

    /// The newest offset `client` saw, if any.
    pub async fn offset(&mut self, client: &str) -> Option<String> {
        let r = self.call(json!({"op": "offset", "client": client})).await;
        r["offset"].as_str().map(str::to_string)
    }

    /// Every event `client` received (in order) until its next `until` event, which ends the
    /// list; within [`WAIT`].
    pub async fn events_until(&mut self, client: &str, until: &str) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = if let Some(at) = self.seen.iter().position(|v| v["client"] == client) {
                self.seen.remove(at).unwrap_or_default()
            } else {
                match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                    Ok(Some(v)) => v,
                    Ok(None) => panic!("the driver exited"),
                    Err(_) => panic!("{client} received no {until} within {WAIT:?}: {got:?}"),
                }
            };
            if value["client"] != client {
                self.seen.push_back(value);
                continue;
            }
            let done = value["event"] == until;
            got.push(value);
            if done {
                return got;
            }
        }
    }

    fn take_seen(&mut self, client: &str, event: &str) -> Option<Value> {
        let at = self
            .seen
            .iter()
            .position(|v| v["client"] == client && v["event"] == event)?;
        self.seen.remove(at)
    }

    /// The first argument of the next `event` that `client` receives (within `WAIT`).
    pub async fn event(&mut self, client: &str, event: &str) -> Value {
        self.event_within(client, event, WAIT)
            .await
            .unwrap_or_else(|| panic!("{client} received no {event} within {WAIT:?}"))
    }

    /// Like [`Sio::event`], or None when none arrives within `within`.
    pub async fn event_within(
        &mut self,
        client: &str,
        event: &str,
        within: Duration,
    ) -> Option<Value> {
        if let Some(v) = self.take_seen(client, event) {
            return Some(v["args"][0].clone());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let value = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) => v,
                Ok(None) => panic!("the driver exited"),
                Err(_) => return None,
            };
            if value["client"] == client && value["event"] == event {
                return Some(value["args"][0].clone());
            }
            self.seen.push_back(value);
        }
    }
}

/// A Socket.io client that completes its handshake over a raw WebSocket and then never reads
/// again: what the server sends piles up in its kernel buffers (kept small) and then in the
/// server's queue for it. Written over a bare `TcpStream` (RFC 6455 framing is a few lines) so
/// the test controls exactly when reading stops.
pub struct StalledClient {
    /// Held open, never read after the handshake.
    _stream: tokio::net::TcpStream,
}

impl StalledClient {
    /// Connects to the gateway at `addr` as the user of `token`; returns once the server has
    /// sent the Socket.io CONNECT (the socket is in its user's room).
    pub async fn connect(addr: std::net::SocketAddr, token: &str) -> StalledClient {
        use tokio::io::AsyncReadExt as _;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // A small receive window, so the server's writes block soon.
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connect");
        let request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("upgrade request");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.expect("upgrade answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let open = read_text_frame(&mut stream).await;
        assert!(open.starts_with("0{"), "engine.io open: {open}");
        let connect = format!("40{}", json!({ "token": token }));
        stream
            .write_all(&client_text_frame(&connect))
            .await
            .expect("CONNECT");
        loop {
            let packet = read_text_frame(&mut stream).await;
            if packet.starts_with("40") {
                break;
            }
            assert!(!packet.starts_with("44"), "refused: {packet}");
        }
        StalledClient { _stream: stream }
    }
}

/// One unfragmented text frame from the server (unmasked, RFC 6455 5.2).
async fn read_text_frame(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.expect("frame header");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).await.expect("length");
            usize::from(u16::from_be_bytes(n))
        }
        127 => panic!("a frame over 64 KiB"),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("payload");
    assert_eq!(head[0], 0x81, "a final text frame");
    String::from_utf8(payload).expect("UTF-8")
}

/// A masked text frame from a client (RFC 6455 5.3).
fn client_text_frame(text: &str) -> Vec<u8> {
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let bytes = text.as_bytes();
    let mut frame = vec![0x81];
    match u16::try_from(bytes.len()) {
        Ok(n) if n < 126 => frame.push(0x80 | u8::try_from(n).unwrap_or(0)),
        Ok(n) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => panic!("a frame over 64 KiB"),
    }
    frame.extend_from_slice(&mask);
    frame.extend(bytes.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

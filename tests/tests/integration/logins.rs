//! Source logins on a real `onda edge` and agent: wrong DJ passwords at once cannot exhaust
//! memory or threads (Argon2 checks are bounded, the excess refused at once), failed logins
//! lock out an address and a user until the lockout passes, a DJ's successful check is
//! remembered, an agent's edge limits connections per address by default (relay pulls of peer
//! nodes not counted), nobody can keep a station off the air by failing logins on purpose, and
//! the source on air titles its show whatever the login checker is doing.

use onda_tests::edge::EdgeNode;
use onda_tests::fixture::ClusterFixture;
use onda_tests::wait_for;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// `friday-night` hashed by the control plane's `secrets::hash_password` (Argon2id, 19 MiB).
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$MSVh1jgze0H4aNrq4EEOnA$7cBSps/jHr3dPVhHEXiVsttFxSt0AHy74yL3RIGoqQc";
/// Basic credentials: `dj:friday-night`, `dj:wrong-password`, `source:hackme`, `nobody:wrong`.
const DJ_RIGHT: &str = "ZGo6ZnJpZGF5LW5pZ2h0";
const DJ_WRONG: &str = "ZGo6d3JvbmctcGFzc3dvcmQ=";
const SOURCE_RIGHT: &str = "c291cmNlOmhhY2ttZQ==";
const NOBODY: &str = "bm9ib2R5Ondyb25n";

fn mount() -> String {
    mount_with("")
}

/// [`mount`] with more of the mount's keys (each line ending in a newline).
fn mount_with(keys: &str) -> String {
    format!(
        "[[mounts]]\npath = \"/live\"\nsource_password = \"hackme\"\n{keys}\
         [[mounts.source_users]]\nuser = \"dj\"\npassword_hash = \"{HASH}\"\n"
    )
}

async fn connect_from(edge: &str, from: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    socket
        .connect(edge.parse().expect("edge address"))
        .await
        .expect("connect")
}

/// A source `PUT /live` with `credentials` from `from`: the status and the answer. The
/// connection is closed after the answer's head (an accepted source is then dropped).
async fn put(edge: &str, from: [u8; 4], credentials: &str) -> (u16, String) {
    let mut s = connect_from(edge, from).await;
    let req = format!(
        "PUT /live HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: audio/mpeg\r\nIce-Public: 0\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        // The body of a refusal, if any.
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A source `PUT /live` from `from` that stays on the air until the returned connection is
/// dropped.
async fn go_on_air(edge: &str, from: [u8; 4], credentials: &str) -> TcpStream {
    let mut s = connect_from(edge, from).await;
    let req = format!(
        "PUT /live HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: audio/mpeg\r\nIce-Public: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    s
}

/// Reads a response head (up to 20 s: a loaded machine is slow, and an empty answer means
/// none came).
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).to_string()
}

/// A `GET` from `from` with `headers` (each ending in CRLF): the whole answer.
async fn get(edge: &str, from: [u8; 4], path: &str, headers: &str) -> String {
    let mut s = connect_from(edge, from).await;
    let req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut reply = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut reply)).await;
    reply
}

/// A metric of the edge at `edge`, asked from `from`.
async fn metric_from(edge: &str, from: [u8; 4], series: &str) -> f64 {
    get(edge, from, "/metrics", "")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// VmRSS (kB) and Threads of a process.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// 200 clients at once, each trying three wrong DJ passwords: the node's memory and threads stay
/// bounded (two Argon2 checks at a time), and the attempts beyond them are refused at once with
/// a 503 saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_dj_passwords_at_once_keep_memory_and_threads_bounded() {
    // No per-address limits or lockouts here: only the bound on checks is tested.
    let edge = EdgeNode::start(&format!(
        "[limits]\nmax_connections_per_ip = 0\nlogin_failures = 0\npassword_checks = 2\n\n{}",
        mount()
    ))
    .await;
    let pid = edge.proc.pid();
    let (rss0, threads0) = rss_and_threads(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (rss, threads) = rss_and_threads(pid);
                peak = (peak.0.max(rss), peak.1.max(threads));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let addr = edge.addr.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..3 {
                    let t = Instant::now();
                    let (status, text) = put(&addr, [127, 0, 0, 1], DJ_WRONG).await;
                    out.push((status, text, t.elapsed()));
                }
                out
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.expect("client"));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (rss, threads) = sampler.await.expect("sampler");
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let refused = answers.iter().filter(|a| a.0 == 401).count();
    assert_eq!(
        busy.len() + refused,
        600,
        "every attempt is answered 401 or 503"
    );
    assert!(!busy.is_empty(), "attempts beyond the checks are refused");
    assert!(
        busy.iter().all(|a| a.1.contains("try again in a moment")),
        "{:?}",
        busy.first()
    );
    // Refused at once rather than queued: no more Argon2 checks ran than the attempts that
    // were answered 401 (each wrong password checked is one), however long they took.
    let verifications = edge.metric("onda_edge_password_verifications_total").await;
    assert_eq!(
        verifications, refused as f64,
        "one check per 401, none for a 503"
    );
    assert!(
        busy.iter().all(|a| a.2 < Duration::from_secs(15)),
        "a refusal does not wait for the checks before it"
    );
    let rise_mb = rss.saturating_sub(rss0) / 1024;
    assert!(rise_mb < 100, "RSS rose by {rise_mb} MB ({rss0} kB before)");
    assert!(
        threads < threads0 + 16,
        "{threads} threads at the peak ({threads0} before)"
    );
    eprintln!(
        "600 wrong passwords: {refused} checked, {} refused busy, RSS +{rise_mb} MB, threads {threads0}->{threads}",
        busy.len()
    );
}

/// Three failed logins lock out their address (for any user) and their user (from any
/// address) with a 429 and Retry-After; other users elsewhere are not affected; after the
/// lockout, the right password is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_out_an_address_and_a_user_until_the_lockout_passes() {
    let edge = EdgeNode::start(&format!(
        "[limits]\nlogin_failures = 3\nlogin_lockout_ms = 5000\n\n{}",
        mount()
    ))
    .await;
    let a = &edge.addr;
    for _ in 0..3 {
        assert_eq!(put(a, [127, 0, 0, 2], DJ_WRONG).await.0, 401);
    }
    // The user, from another address, even with the right password.
    let (status, text) = put(a, [127, 0, 0, 3], DJ_RIGHT).await;
    assert_eq!(status, 429, "{text}");
    assert!(
        text.starts_with("HTTP/1.0 429 Too Many Requests\r\n"),
        "{text}"
    );
    assert!(text.contains("Retry-After: "), "{text}");
    assert!(text.contains("Too many failed logins"), "{text}");
    // The address, for another user.
    let (status, _) = put(a, [127, 0, 0, 2], SOURCE_RIGHT).await;
    assert_eq!(status, 429);
    // Unknown user names count against their address too.
    for _ in 0..3 {
        assert_eq!(put(a, [127, 0, 0, 4], NOBODY).await.0, 401);
    }
    assert_eq!(put(a, [127, 0, 0, 4], SOURCE_RIGHT).await.0, 429);
    // Another user from another address is let in.
    let (status, text) = put(a, [127, 0, 0, 5], SOURCE_RIGHT).await;
    assert_eq!(status, 200, "{text}");
    wait_for("the source gone", Duration::from_secs(20), || async {
        edge.source_status("/live").await.is_none().then_some(())
    })
    .await;
    // Once the lockout has passed, the DJ's right password works.
    wait_for("the lockout to pass", Duration::from_secs(20), || async {
        (put(a, [127, 0, 0, 2], DJ_RIGHT).await.0 == 200).then_some(())
    })
    .await;
    assert!(edge.metric("onda_edge_login_throttled_total").await >= 3.0);
}

/// A DJ who logs in again with the same password is not checked by Argon2 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_djs_successful_check_is_remembered() {
    let edge = EdgeNode::start(&mount()).await;
    for n in 0..3 {
        let (status, text) = put(&edge.addr, [127, 0, 0, 1], DJ_RIGHT).await;
        assert_eq!(status, 200, "login {n}: {text}");
        wait_for("the source gone", Duration::from_secs(20), || async {
            edge.source_status("/live").await.is_none().then_some(())
        })
        .await;
    }
    assert_eq!(
        edge.metric("onda_edge_password_verifications_total").await,
        1.0
    );
    // A wrong password is checked.
    assert_eq!(put(&edge.addr, [127, 0, 0, 1], DJ_WRONG).await.0, 401);
    assert_eq!(
        edge.metric("onda_edge_password_verifications_total").await,
        2.0
    );
}

/// The edge of an agent with no `[limits]` takes at most 100 connections from one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_edge_limits_connections_per_address_by_default() {
    let fx = ClusterFixture::start(1).await;
    let agent = &fx.agents[0];
    let addr = agent.edge_url.trim_start_matches("http://").to_string();
    // 101 connections from one address that send nothing: exactly one is refused (whichever
    // the edge admits last; it handles connections concurrently), the others stay open.
    let mut conns = Vec::new();
    for _ in 0..101 {
        conns.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in conns {
        let tx = tx.clone();
        tasks.spawn(async move {
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply).await;
            let _ = tx.send(reply);
        });
    }
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a refusal within 30 s")
        .expect("reply");
    assert!(first.starts_with("HTTP/1.0 503"), "{first}");
    assert!(first.contains("Too many connections"), "{first}");
    // One refused means the other hundred were admitted: the metric says how many were refused.
    let refused = metric_from(&addr, [127, 0, 0, 2], "onda_edge_refused_connections_total").await;
    assert_eq!(refused, 1.0);
    assert!(rx.try_recv().is_err(), "the others are open");
    tasks.abort_all();
    // Another address is still served.
    let mut other = connect_from(&addr, [127, 0, 0, 2]).await;
    other
        .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let mut reply = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), other.read_to_string(&mut reply)).await;
    assert!(reply.contains(" 200 "), "{reply}");
}

/// A peer node relaying many mounts pulls them all from one address: relay pulls with the
/// mount's relay key are not counted against `max_connections_per_ip`, plain listeners are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pulls_of_a_peer_node_are_not_limited_per_address() {
    let edge = EdgeNode::start(&format!(
        "[limits]\nmax_connections_per_ip = 3\nsource_timeout_ms = 600000\n\n{}",
        mount_with("relay_key = \"peer-key\"\n")
    ))
    .await;
    let _source = go_on_air(&edge.addr, [127, 0, 0, 9], SOURCE_RIGHT).await;
    let listen = |relay: bool| {
        let addr = edge.addr.clone();
        async move {
            let mut s = connect_from(&addr, [127, 0, 0, 1]).await;
            let key = if relay {
                "X-Onda-Relay: peer-key\r\n"
            } else {
                ""
            };
            let req = format!("GET /live HTTP/1.0\r\nHost: x\r\n{key}\r\n");
            s.write_all(req.as_bytes()).await.expect("send");
            let head = read_head(&mut s).await;
            (head, s)
        }
    };
    let mut open = Vec::new();
    for n in 0..5 {
        let (head, s) = listen(true).await;
        assert!(head.starts_with("HTTP/1.0 200"), "relay pull {n}: {head}");
        open.push(s);
    }
    for n in 0..3 {
        let (head, s) = listen(false).await;
        assert!(head.starts_with("HTTP/1.0 200"), "listener {n}: {head}");
        open.push(s);
    }
    let (head, _) = listen(false).await;
    assert!(head.starts_with("HTTP/1.0 503"), "{head}");
    // A wrong relay key is a plain listener.
    let mut s = connect_from(&edge.addr, [127, 0, 0, 1]).await;
    s.write_all(b"GET /live HTTP/1.0\r\nX-Onda-Relay: guess\r\n\r\n")
        .await
        .expect("send");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.0 503"), "{head}");
    // Still more relay pulls while the listeners fill the address's share.
    for n in 5..8 {
        let (head, s) = listen(true).await;
        assert!(head.starts_with("HTTP/1.0 200"), "relay pull {n}: {head}");
        open.push(s);
    }
    let refused = metric_from(
        &edge.addr,
        [127, 0, 0, 2],
        "onda_edge_refused_connections_total",
    )
    .await;
    assert_eq!(refused, 2.0);
}

/// Failing logins on purpose from elsewhere (127.0.0.2 and .3) locks out `source@/live` and
/// `dj@/live`, but cannot keep the station off the air: the right source password still logs
/// in at once, and so does a DJ whose success was remembered, without Argon2 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_lockout_cannot_keep_a_station_off_the_air() {
    let edge = EdgeNode::start(&format!(
        "[limits]\nlogin_failures = 3\nlogin_lockout_ms = 600000\n\n{}",
        mount()
    ))
    .await;
    let a = &edge.addr;
    let gone = || async {
        wait_for("the source gone", Duration::from_secs(20), || async {
            edge.source_status("/live").await.is_none().then_some(())
        })
        .await;
    };
    assert_eq!(put(a, [127, 0, 0, 1], DJ_RIGHT).await.0, 200);
    gone().await;
    // source:wrong and dj:wrong-password, three times each from an attacker's address.
    for _ in 0..3 {
        assert_eq!(put(a, [127, 0, 0, 2], "c291cmNlOndyb25n").await.0, 401);
        assert_eq!(put(a, [127, 0, 0, 3], DJ_WRONG).await.0, 401);
    }
    let checks = edge.metric("onda_edge_password_verifications_total").await;
    assert_eq!(checks, 4.0, "the DJ's login and three wrong DJ passwords");
    // The DJ user is locked out for credentials not seen before (no Argon2 for them)...
    let (status, text) = put(a, [127, 0, 0, 4], DJ_WRONG).await;
    assert_eq!(status, 429, "{text}");
    // ...but the station gets on the air.
    let (status, text) = put(a, [127, 0, 0, 1], SOURCE_RIGHT).await;
    assert_eq!(status, 200, "{text}");
    gone().await;
    let (status, text) = put(a, [127, 0, 0, 1], DJ_RIGHT).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        edge.metric("onda_edge_password_verifications_total").await,
        checks
    );
}

/// The source on air titles its show with the credentials it logged in with, even while its
/// address is locked out (which stops every other login check from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_on_air_titles_while_its_address_is_locked_out() {
    let edge = EdgeNode::start(&format!(
        "[limits]\nlogin_failures = 3\nlogin_lockout_ms = 600000\nsource_timeout_ms = 600000\n\n{}",
        mount()
    ))
    .await;
    let a = &edge.addr;
    let title = |song: &'static str, credentials: &'static str| async move {
        get(
            a,
            [127, 0, 0, 1],
            &format!("/admin/metadata?mount=/live&mode=updinfo&song={song}"),
            &format!("Authorization: Basic {credentials}\r\n"),
        )
        .await
    };
    for (who, credentials) in [("dj", DJ_RIGHT), ("source", SOURCE_RIGHT)] {
        let on_air = go_on_air(a, [127, 0, 0, 1], credentials).await;
        if who == "source" {
            // Unknown users from the source's own address until it is locked out.
            for _ in 0..3 {
                let _ = put(a, [127, 0, 0, 1], NOBODY).await;
            }
            assert_eq!(put(a, [127, 0, 0, 1], SOURCE_RIGHT).await.0, 429);
        }
        let checks = edge.metric("onda_edge_password_verifications_total").await;
        let reply = title("Hello", credentials).await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{who}: {reply}");
        wait_for("the title", Duration::from_secs(20), || async {
            let s = edge.source_status("/live").await?;
            (s["title"] == "Hello").then_some(())
        })
        .await;
        assert_eq!(
            edge.metric("onda_edge_password_verifications_total").await,
            checks
        );
        // Other credentials are still checked (and refused from the locked-out address).
        let reply = title("Nope", DJ_WRONG).await;
        assert!(reply.starts_with("HTTP/1.0 401"), "{who}: {reply}");
        drop(on_air);
        wait_for("the source gone", Duration::from_secs(20), || async {
            edge.source_status("/live").await.is_none().then_some(())
        })
        .await;
    }
}

//! `onda edge` against real clients: ffmpeg as the source (PUT and legacy SOURCE), ffprobe and
//! ffmpeg as players, raw sockets for ICY metadata, chunked PUT, limits and slow listeners.

use onda_tests::edge::{EdgeNode, RawListener, START, ffmpeg_source};
use onda_tests::process::Proc;
use onda_tests::wait_for;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const LIVE: &str = "[[mounts]]\npath = \"/live\"\nsource_password = \"hackme\"\n";

async fn run_to_end(mut p: Proc) -> (bool, String, String) {
    let status = p.wait_exit(START).await;
    (status.success(), p.stdout(), p.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_source_plays_in_ffprobe_ffmpeg_and_status() {
    let edge = EdgeNode::start(&format!(
        "{LIVE}name = \"Default name\"\ndescription = \"Config description\"\n"
    ))
    .await;
    let _src = ffmpeg_source(
        &edge.icecast_url("/live", "hackme"),
        440,
        &[
            "-ice_name",
            "Test Radio",
            "-ice_genre",
            "Rock",
            "-ice_url",
            "http://example.org",
        ],
    );
    let status = edge.wait_source("/live").await;
    assert_eq!(status["server_name"], "Test Radio");
    assert_eq!(status["genre"], "Rock");
    assert_eq!(status["server_type"], "audio/mpeg");
    assert_eq!(
        status["server_description"], "Config description",
        "config fills what the source did not send"
    );
    assert!(status.get("dummy").is_some_and(|d| d.is_null()));

    let url = edge.url("/live");
    let (ok, out, err) = run_to_end(Proc::external(
        "ffprobe",
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate,channels",
            "-of",
            "json",
            &url,
        ],
    ))
    .await;
    assert!(ok, "ffprobe failed: {err}");
    let probe: serde_json::Value = serde_json::from_str(&out).expect("ffprobe json");
    assert_eq!(probe["streams"][0]["codec_name"], "mp3", "{out}");
    assert_eq!(probe["streams"][0]["sample_rate"], "44100");
    assert_eq!(probe["streams"][0]["channels"], 2);

    // Three seconds decode without a single error.
    let (ok, _, err) = run_to_end(Proc::external(
        "ffmpeg player",
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", &url, "-t", "3", "-f", "null", "-",
        ],
    ))
    .await;
    assert!(ok && err.trim().is_empty(), "decoding errors: {err}");

    // Every listener's audio starts on an MP3 frame boundary, wherever the burst began.
    for _ in 0..3 {
        let mut c = TcpStream::connect(&edge.addr).await.expect("connect");
        c.write_all(b"GET /live HTTP/1.0\r\n\r\n")
            .await
            .expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let body = loop {
            let n = c.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() >= i + 4 + 4
            {
                break got[i + 4..].to_vec();
            }
        };
        assert!(
            onda_edge::frames::mpeg(&body).is_some(),
            "first bytes {:02x?}",
            &body[..4]
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // A listener appears in the counts and in listclients.
    let l = RawListener::connect(&edge.addr, "/live", false).await;
    l.wait_more_audio(64 * 1024).await;
    let h = l.heard();
    for line in [
        "HTTP/1.0 200 OK",
        "Content-Type: audio/mpeg",
        "icy-name:Test Radio",
        "icy-genre:Rock",
        "icy-pub:0",
        "Access-Control-Allow-Origin: *",
    ] {
        assert!(
            h.head.contains(line),
            "reply head lacks {line:?}:\n{}",
            h.head
        );
    }
    let s = edge.wait_source("/live").await;
    assert_eq!(s["listeners"], 1, "{s}");
    let (code, list) = edge.admin_get("/admin/streamlist.txt").await;
    assert_eq!((code, list.as_str()), (200, "/live\n"));
    let (code, xml) = edge.admin_get("/admin/listclients?mount=/live").await;
    assert_eq!(code, 200);
    assert!(
        xml.contains("<Listeners>1</Listeners>")
            && xml.contains("<UserAgent>onda-test</UserAgent>"),
        "{xml}"
    );
    assert!(edge.metric("onda_edge_listeners{mount=\"/live\"}").await >= 1.0);
    let since = edge
        .metric("onda_edge_source_connected_since_seconds{mount=\"/live\"}")
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        since > now - 120.0 && since <= now,
        "source connected at {since}, now {now}"
    );

    // HEAD answers the head only; OPTIONS is a CORS preflight.
    let r = onda_shared::http::client()
        .head(&url)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    let r = onda_shared::http::client()
        .request(reqwest::Method::OPTIONS, &url)
        .send()
        .await
        .expect("options");
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap_or("")
            .contains("Icy-MetaData")
    );
    // Browsers refuse a preflight that names the allowed origin twice.
    assert_eq!(
        r.headers()
            .get_all("access-control-allow-origin")
            .iter()
            .collect::<Vec<_>>(),
        ["*"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_source_and_chunked_put_both_feed_listeners() {
    let edge = EdgeNode::start(&format!(
        "{LIVE}\n[[mounts]]\npath = \"/chunked\"\nsource_password = \"pw2\"\n"
    ))
    .await;
    let _legacy = ffmpeg_source(
        &edge.icecast_url("/live", "hackme"),
        440,
        &["-legacy_icecast", "1"],
    );
    edge.wait_source("/live").await;
    let l = RawListener::connect(&edge.addr, "/live", false).await;
    l.wait_more_audio(32 * 1024).await;

    // A chunked PUT with Expect, as Liquidsoap and Icecast 2.5 clients send it: 100 first, then
    // 200, then the chunks reach a listener.
    let mut s = TcpStream::connect(&edge.addr).await.expect("connect");
    s.write_all(b"PUT /chunked HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c291cmNlOnB3Mg==\r\nContent-Type: audio/mpeg\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("send head");
    let mut reply = vec![0u8; 1024];
    let mut got = Vec::new();
    while !(String::from_utf8_lossy(&got).contains("200 OK") && got.ends_with(b"\r\n\r\n")) {
        let n = tokio::time::timeout(START, s.read(&mut reply))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&reply[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK"),
        "{text}"
    );
    let payload = vec![0x55u8; 4000];
    let mut body = Vec::new();
    for _ in 0..40 {
        body.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
        body.extend_from_slice(&payload);
        body.extend_from_slice(b"\r\n");
    }
    let listener = RawListener::connect(&edge.addr, "/chunked", false).await;
    // Once the reply head is here, the listener's start is fixed: it gets every chunk below.
    wait_for("the /chunked reply head", START, || {
        let h = listener.heard();
        async move { h.head.contains("200 OK").then_some(()) }
    })
    .await;
    s.write_all(&body).await.expect("send chunks");
    listener.wait_audio_total(160_000).await;
    assert_eq!(
        listener.heard().audio_bytes,
        160_000,
        "every byte of the chunked body and nothing of its framing"
    );
    s.write_all(b"0\r\n\r\n").await.expect("last chunk");
    wait_for("the chunked source to end", START, || async {
        edge.source_status("/chunked").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_updates_reach_icy_listeners() {
    let edge = EdgeNode::start(LIVE).await;
    let _src = ffmpeg_source(&edge.icecast_url("/live", "hackme"), 440, &[]);
    edge.wait_source("/live").await;
    let l = RawListener::connect(&edge.addr, "/live", true).await;
    l.wait_more_audio(1000).await;
    assert!(
        l.heard().head.contains("icy-metaint:16000"),
        "{}",
        l.heard().head
    );

    let client = onda_shared::http::client();
    let set = |user: &str, pass: &str, query: &str| {
        client
            .get(edge.url(&format!("/admin/metadata?mount=/live&mode=updinfo&{query}")))
            .basic_auth(user, Some(pass))
            .send()
    };
    // The mount's source credentials may set it, and so may the admin.
    let r = set(
        "source",
        "hackme",
        "song=Guns%20N%27%20Roses%20-%20Don%27t%20Cry",
    )
    .await
    .expect("req");
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("<return>1</return>")
    );
    l.wait_title("Guns N' Roses - Don't Cry").await;
    set("admin", "admin-secret", "artist=Artist&title=T%C3%ADtulo")
        .await
        .expect("req");
    l.wait_title("Artist - Título").await;
    set("admin", "admin-secret", "song=Caf%E9&charset=ISO-8859-1")
        .await
        .expect("req");
    l.wait_title("Café").await;
    assert_eq!(edge.wait_source("/live").await["title"], "Café");
    // Wrong credentials change nothing.
    let r = set("source", "wrong", "song=Hacked").await.expect("req");
    assert_eq!(r.status(), 401);
    l.wait_more_audio(40_000).await;
    assert!(!l.heard().titles.iter().any(|t| t == "Hacked"));
    // A listener without Icy-MetaData gets pure audio.
    let plain = RawListener::connect(&edge.addr, "/live", false).await;
    plain.wait_more_audio(20_000).await;
    assert!(
        !plain
            .heard()
            .head
            .lines()
            .any(|l| l.starts_with("icy-metaint:"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_auth_busy_mount_and_missing_content_type() {
    let edge = EdgeNode::start(LIVE).await;
    let client = onda_shared::http::client();
    // libshout's probe: no credentials, Content-Length 0; the 401 must list PUT in Allow.
    let mut s = TcpStream::connect(&edge.addr).await.expect("connect");
    s.write_all(b"SOURCE /live HTTP/1.0\r\nContent-Length: 0\r\nPrefer: return=minimal\r\n\r\n")
        .await
        .expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.0 401"), "{reply}");
    assert!(reply.contains("WWW-Authenticate: Basic realm="), "{reply}");
    assert!(
        reply
            .lines()
            .any(|l| l.starts_with("Allow:") && l.contains("PUT")),
        "{reply}"
    );

    let put = |pw: &str, ct: Option<&str>| {
        let mut r = client
            .put(edge.url("/live"))
            .basic_auth("source", Some(pw))
            .body(vec![0u8; 10]);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    assert_eq!(
        put("wrong", Some("audio/mpeg"))
            .await
            .expect("put")
            .status(),
        401
    );
    assert_eq!(put("hackme", None).await.expect("put").status(), 403);
    let _src = ffmpeg_source(&edge.icecast_url("/live", "hackme"), 440, &[]);
    edge.wait_source("/live").await;
    let r = put("hackme", Some("audio/mpeg")).await.expect("put");
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap_or_default().contains("in use"));
    let r = client
        .put(edge.url("/nope"))
        .basic_auth("source", Some("hackme"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 404);
    assert_eq!(
        onda_shared::http::get(edge.url("/nope"))
            .await
            .expect("get")
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_listeners_refuses_the_next_listener() {
    let edge = EdgeNode::start(&format!("{LIVE}max_listeners = 2\n")).await;
    let _src = ffmpeg_source(&edge.icecast_url("/live", "hackme"), 440, &[]);
    edge.wait_source("/live").await;
    let a = RawListener::connect(&edge.addr, "/live", false).await;
    let b = RawListener::connect(&edge.addr, "/live", false).await;
    a.wait_more_audio(1000).await;
    b.wait_more_audio(1000).await;
    let r = onda_shared::http::get(edge.url("/live"))
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap_or_default().contains("max listeners"));
    assert_eq!(
        edge.metric("onda_edge_mount_listener_refusals_total{mount=\"/live\"}")
            .await,
        1.0
    );
    drop(a);
    let c = wait_for("a free slot after a listener left", START, || async {
        let l = RawListener::connect(&edge.addr, "/live", false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        l.heard().head.contains("200 OK").then_some(l)
    })
    .await;
    c.wait_more_audio(1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_moves_listeners_and_back_without_disconnecting() {
    let edge = EdgeNode::start(
        "[[mounts]]\npath = \"/live\"\nsource_password = \"hackme\"\nfallback = \"/backup\"\n\n[[mounts]]\npath = \"/backup\"\nsource_password = \"backup-pw\"\n",
    )
    .await;
    let _backup = ffmpeg_source(&edge.icecast_url("/backup", "backup-pw"), 220, &[]);
    edge.wait_source("/backup").await;
    let live = ffmpeg_source(&edge.icecast_url("/live", "hackme"), 440, &[]);
    edge.wait_source("/live").await;
    let (c, _) = edge
        .admin_get("/admin/metadata?mount=/backup&mode=updinfo&song=BACKUP")
        .await;
    assert_eq!(c, 200);
    edge.admin_get("/admin/metadata?mount=/live&mode=updinfo&song=LIVE")
        .await;

    let l = RawListener::connect(&edge.addr, "/live", true).await;
    l.wait_title("LIVE").await;
    // The live source goes away: the listener stays connected and hears the backup.
    let (code, body) = edge.admin_get("/admin/killsource?mount=/live").await;
    assert_eq!(code, 200, "{body}");
    drop(live);
    l.wait_title("BACKUP").await;
    l.wait_more_audio(32_000).await;
    // A listener arriving now on /live is served the fallback too.
    let newcomer = RawListener::connect(&edge.addr, "/live", true).await;
    newcomer.wait_title("BACKUP").await;
    // The live source returns: both go back.
    let _live2 = ffmpeg_source(&edge.icecast_url("/live", "hackme"), 880, &[]);
    edge.wait_source("/live").await;
    edge.admin_get("/admin/metadata?mount=/live&mode=updinfo&song=LIVE%20AGAIN")
        .await;
    l.wait_title("LIVE AGAIN").await;
    newcomer.wait_title("LIVE AGAIN").await;
    l.wait_more_audio(16_000).await;
    assert!(!l.heard().closed);
    // Without a fallback the listener is disconnected when the source ends.
    let (code, _) = edge.admin_get("/admin/killsource?mount=/backup").await;
    assert_eq!(code, 200);
    let b = RawListener::connect(&edge.addr, "/backup", false).await;
    wait_closed("the /backup listener to be closed", &b).await;
}

/// Waits until `listener` is disconnected by the server.
async fn wait_closed(what: &str, listener: &RawListener) {
    wait_for(what, START, || {
        let h = listener.heard();
        async move { h.closed.then_some(()) }
    })
    .await;
}

/// The words an admin sends a listener's task: `/admin/moveclients` (it hears the other mount
/// and counts there) and `/admin/killclient`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_moved_and_killed_by_the_admin() {
    let edge = EdgeNode::start(
        "[[mounts]]\npath = \"/a\"\nsource_password = \"a-pw\"\n\n[[mounts]]\npath = \"/b\"\nsource_password = \"b-pw\"\n",
    )
    .await;
    let _a = ffmpeg_source(&edge.icecast_url("/a", "a-pw"), 220, &[]);
    let _b = ffmpeg_source(&edge.icecast_url("/b", "b-pw"), 440, &[]);
    edge.wait_source("/a").await;
    edge.wait_source("/b").await;
    for (mount, song) in [("/a", "ON%20A"), ("/b", "ON%20B")] {
        let (code, body) = edge
            .admin_get(&format!(
                "/admin/metadata?mount={mount}&mode=updinfo&song={song}"
            ))
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let moved = RawListener::connect(&edge.addr, "/a", true).await;
    moved.wait_title("ON A").await;
    let (code, body) = edge
        .admin_get("/admin/moveclients?mount=/a&destination=/b")
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("1 listeners"), "{body}");
    moved.wait_title("ON B").await;
    moved.wait_more_audio(16_000).await;
    let (_, on_a) = edge.admin_get("/admin/listclients?mount=/a").await;
    assert!(on_a.contains("<Listeners>0</Listeners>"), "{on_a}");
    let (_, on_b) = edge.admin_get("/admin/listclients?mount=/b").await;
    assert!(on_b.contains("<Listeners>1</Listeners>"), "{on_b}");
    let id = on_b
        .split("<ID>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("a listener id")
        .to_string();
    let (code, body) = edge
        .admin_get(&format!("/admin/killclient?mount=/b&id={id}"))
        .await;
    assert_eq!(code, 200, "{body}");
    wait_closed("the killed listener to be closed", &moved).await;
    let (_, on_b) = edge.admin_get("/admin/listclients?mount=/b").await;
    assert!(on_b.contains("<Listeners>0</Listeners>"), "{on_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_listener_is_dropped_while_others_keep_up() {
    let edge = EdgeNode::start(&format!(
        "[limits]\nqueue_bytes = 65536\nburst_bytes = 16384\n\n{LIVE}"
    ))
    .await;
    // Ten times real time, so a stalled reader falls behind within seconds.
    let input = "sine=frequency=440:sample_rate=44100:duration=300";
    let url = edge.icecast_url("/live", "hackme");
    let _src = Proc::external(
        "ffmpeg fast source",
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "warning",
            "-readrate",
            "10",
            "-f",
            "lavfi",
            "-i",
            input,
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-content_type",
            "audio/mpeg",
            "-f",
            "mp3",
            &url,
        ],
    );
    edge.wait_source("/live").await;
    let reader = RawListener::connect(&edge.addr, "/live", false).await;
    // The stalled listener: a tiny receive buffer, and it never reads.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr: std::net::SocketAddr = edge.addr.parse().expect("addr");
    let mut stalled = sock.connect(addr).await.expect("connect");
    stalled
        .write_all(b"GET /live HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    wait_for("the stalled listener to be dropped", START, || async {
        (edge
            .metric("onda_edge_mount_slow_listener_drops_total{mount=\"/live\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    // Meanwhile the reading listener kept pace with the source.
    reader.wait_more_audio(100_000).await;
    let read = edge.bytes_read().await;
    let heard = reader.heard().audio_bytes;
    assert!(
        heard as f64 >= read as f64 * 0.9 - 16_384.0,
        "reader heard {heard} of {read} bytes"
    );
    assert!(!reader.heard().closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_request_heads_and_connection_limits() {
    let edge = EdgeNode::start(&format!("[limits]\nheader_timeout_ms = 500\nmax_header_bytes = 1024\nmax_connections_per_ip = 3\n\n{LIVE}")).await;
    // Slowloris: half a head, then nothing.
    let mut slow = TcpStream::connect(&edge.addr).await.expect("connect");
    slow.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_string(&mut reply))
        .await
        .expect("closed well within 5 s")
        .expect("read");
    assert!(reply.starts_with("HTTP/1.0 408"), "{reply}");
    // A head larger than allowed.
    let mut big = TcpStream::connect(&edge.addr).await.expect("connect");
    big.write_all(format!("GET /live HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000)).as_bytes())
        .await
        .expect("send");
    let mut reply = String::new();
    big.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.0 431"), "{reply}");
    // Garbage.
    let mut junk = TcpStream::connect(&edge.addr).await.expect("connect");
    junk.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        .await
        .expect("send");
    let mut reply = String::new();
    junk.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.0 400"), "{reply}");
    // Three open connections from one address; the fourth is refused.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&edge.addr).await.expect("connect");
        c.write_all(b"GET /live HTTP/1.1\r\n").await.expect("send");
        held.push(c);
    }
    let mut fourth = TcpStream::connect(&edge.addr).await.expect("connect");
    let mut reply = String::new();
    fourth.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.0 503"), "{reply}");
    drop(held);
    // The server is still fine.
    wait_for("a normal request after the limits", START, || async {
        onda_shared::http::get(edge.url("/status-json.xsl"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_of_a_relay_plays_carries_titles_and_reconnects() {
    let origin = EdgeNode::start(LIVE).await;
    let src = ffmpeg_source(
        &origin.icecast_url("/live", "hackme"),
        440,
        &["-ice_name", "Origin FM"],
    );
    origin.wait_source("/live").await;
    origin
        .admin_get("/admin/metadata?mount=/live&mode=updinfo&song=Upstream%20Title")
        .await;
    let middle = EdgeNode::start(&format!(
        "[[relays]]\npath = \"/relayed\"\nurl = \"{}\"\n",
        origin.url("/live")
    ))
    .await;
    middle.wait_source("/relayed").await;
    let last = EdgeNode::start(&format!(
        "[[relays]]\npath = \"/r2\"\nurl = \"{}\"\n",
        middle.url("/relayed")
    ))
    .await;
    let status = last.wait_source("/r2").await;
    assert_eq!(
        status["server_name"], "Origin FM",
        "stream headers travel with the relay"
    );

    let l = RawListener::connect(&last.addr, "/r2", true).await;
    l.wait_title("Upstream Title").await;
    l.wait_more_audio(32_000).await;
    origin
        .admin_get("/admin/metadata?mount=/live&mode=updinfo&song=Second%20Title")
        .await;
    l.wait_title("Second Title").await;
    assert_eq!(last.probe_codec("/r2").await, "mp3");

    // The origin's source goes and comes back: the relays reconnect by themselves.
    origin.admin_get("/admin/killsource?mount=/live").await;
    drop(src);
    wait_for("the middle relay to notice", START, || async {
        middle
            .source_status("/relayed")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let _src2 = ffmpeg_source(&origin.icecast_url("/live", "hackme"), 660, &[]);
    origin.wait_source("/live").await;
    middle.wait_source("/relayed").await;
    last.wait_source("/r2").await;
    let again = RawListener::connect(&last.addr, "/r2", false).await;
    again.wait_more_audio(32_000).await;
}

/// libshout (the library behind ezstream, Mixxx, darkice) through its own `shout` tool: the
/// unauthenticated probe, then PUT with credentials; Ogg Vorbis paced by libshout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libshout_client_streams_ogg() {
    // A small burst, so later listeners start long after the stream's header pages.
    let edge = EdgeNode::start(&format!("[limits]\nburst_bytes = 4096\n\n{LIVE}")).await;
    let dir = tempfile::tempdir().expect("dir");
    let track = dir.path().join("tone.ogg");
    let (ok, _, err) = run_to_end(Proc::external(
        "ffmpeg encoder",
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:sample_rate=44100:duration=60",
            "-ac",
            "2",
            "-c:a",
            "libvorbis",
            "-b:a",
            "96k",
            track.to_str().expect("path"),
        ],
    ))
    .await;
    assert!(ok, "encoding failed: {err}");
    let (host, port) = edge.addr.split_once(':').expect("addr");
    let cmd = format!(
        "exec shout --format ogg -H {host} -P {port} --mount /live --user source --pass hackme --station-name 'Shout FM' --station-genre Jazz < {}",
        track.display()
    );
    let _shout = Proc::external("shout", "sh", &["-c", &cmd]);
    let status = edge.wait_source("/live").await;
    assert_eq!(status["server_type"], "application/ogg");
    assert_eq!(status["server_name"], "Shout FM");
    assert_eq!(status["genre"], "Jazz");
    wait_for("40 kB from the source", START, || async {
        (edge.bytes_read().await > 40_000).then_some(())
    })
    .await;
    // Joining mid-stream, the listener is sent the Vorbis header pages first, so it decodes.
    let url = edge.url("/live");
    let (ok, _, err) = run_to_end(Proc::external(
        "ffmpeg player",
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", &url, "-t", "2", "-f", "null", "-",
        ],
    ))
    .await;
    assert!(
        ok && err.trim().is_empty(),
        "decoding a mid-stream Ogg join: {err}"
    );
    assert_eq!(edge.probe_codec("/live").await, "vorbis");
    // Ogg carries its own metadata: no ICY blocks even when asked.
    let l = RawListener::connect(&edge.addr, "/live", true).await;
    l.wait_more_audio(4_000).await;
    assert!(
        !l.heard()
            .head
            .lines()
            .any(|x| x.starts_with("icy-metaint:"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_source_is_dropped_and_admin_routes_need_credentials() {
    let edge = EdgeNode::start(&format!("[limits]\nsource_timeout_ms = 500\n\n{LIVE}")).await;
    // A source that authenticates and then sends nothing.
    let mut s = TcpStream::connect(&edge.addr).await.expect("connect");
    s.write_all(b"SOURCE /live HTTP/1.0\r\nAuthorization: Basic c291cmNlOmhhY2ttZQ==\r\nContent-Type: audio/mpeg\r\n\r\n")
        .await
        .expect("send");
    edge.wait_source("/live").await;
    wait_for("the silent source to be dropped", START, || async {
        edge.source_status("/live").await.is_none().then_some(())
    })
    .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(START, s.read_to_end(&mut rest))
        .await
        .expect("closed by the server");

    for path in [
        "/admin/listclients?mount=/live",
        "/admin/stats",
        "/admin/killsource?mount=/live",
        "/admin/listmounts",
    ] {
        let r = onda_shared::http::get(edge.url(path)).await.expect("get");
        assert_eq!(r.status(), 401, "{path} without credentials");
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
        let r = onda_shared::http::client()
            .get(edge.url(path))
            .basic_auth("admin", Some("wrong"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 401, "{path} with a wrong password");
    }
    let r = onda_shared::http::get(edge.url("/admin/metadata?mount=/live&mode=updinfo&song=x"))
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
}

//! Ogg sources that start a new logical stream (new serial number, new header pages) for every
//! track, as Liquidsoap, ices2 and libshout do. Listeners join at many moments — right after the
//! edge receives a track's first page, and in mid-track — and each must get the header pages of
//! the stream its audio belongs to first, and decode with ffmpeg. status-json shows each track's
//! ARTIST and TITLE comments, as Icecast does.

use onda_tests::edge::{EdgeNode, START};
use onda_tests::media::{Kind, Tags, make_track};
use onda_tests::process::Proc;
use onda_tests::wait_for;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A burst of about a second of these streams, so that a listener joining in a track's first
/// second starts in the track before (as the default 64 KiB burst does on a 22 kbit/s stream
/// for a whole track).
const MOUNT: &str = "[limits]\nburst_bytes = 8192\n\n\
                     [[mounts]]\npath = \"/live\"\nsource_password = \"hackme\"\n";
const TRACKS: [(&str, &str, u32); 2] = [
    ("Ada Artist", "First Song", 330),
    ("Bob Artist", "Second Song", 550),
];
/// How long each joined listener is recorded.
const WINDOW: Duration = Duration::from_millis(1500);

/// Two tagged Ogg Vorbis tracks of 2.5 s each.
async fn tracks(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (i, (artist, title, hz)) in TRACKS.into_iter().enumerate() {
        let tags = Tags {
            artist,
            title,
            album: "",
        };
        out.push(make_track(dir, &format!("t{i}"), Kind::Ogg, 2.5, hz, &tags).await);
    }
    out
}

/// Liquidsoap playing `tracks` in a loop to the edge's `/live`, encoded with `encoder`.
fn liquidsoap(edge: &EdgeNode, dir: &Path, tracks: &[PathBuf], encoder: &str) -> Proc {
    let list = dir.join("list.m3u");
    let lines: Vec<String> = tracks.iter().map(|t| t.display().to_string()).collect();
    std::fs::write(&list, lines.join("\n") + "\n").expect("write playlist");
    let (host, port) = edge.addr.split_once(':').expect("addr");
    let script = dir.join("radio.liq");
    std::fs::write(
        &script,
        format!(
            "settings.init.allow_root.set(true)\nsettings.log.stdout.set(true)\n\
             settings.log.file.set(false)\n\
             s = playlist(mode=\"normal\", reload_mode=\"never\", \"{}\")\n\
             output.icecast({encoder}, host=\"{host}\", port={port}, password=\"hackme\", \
             mount=\"/live\", fallible=true, s)\n",
            list.display()
        ),
    )
    .expect("write script");
    Proc::external(
        "liquidsoap",
        "liquidsoap",
        &[script.to_str().expect("path")],
    )
}

/// ices2 sending the Vorbis files of `tracks` as they are, in a loop.
fn ices2(edge: &EdgeNode, dir: &Path, tracks: &[PathBuf]) -> Proc {
    let list = dir.join("list.txt");
    let lines: Vec<String> = tracks.iter().map(|t| t.display().to_string()).collect();
    std::fs::write(&list, lines.join("\n") + "\n").expect("write playlist");
    let (host, port) = edge.addr.split_once(':').expect("addr");
    let config = dir.join("ices.xml");
    std::fs::write(
        &config,
        format!(
            "<?xml version=\"1.0\"?>\n<ices><background>0</background>\
             <logpath>{dir}</logpath><logfile>ices.log</logfile><loglevel>3</loglevel>\
             <consolelog>1</consolelog><stream><metadata><name>Ices FM</name></metadata>\
             <input><module>playlist</module><param name=\"type\">basic</param>\
             <param name=\"file\">{list}</param><param name=\"random\">0</param>\
             <param name=\"once\">0</param></input><instance><hostname>{host}</hostname>\
             <port>{port}</port><password>hackme</password><mount>/live</mount></instance>\
             </stream></ices>\n",
            dir = dir.display(),
            list = list.display()
        ),
    )
    .expect("write config");
    Proc::external("ices2", "ices2", &[config.to_str().expect("path")])
}

/// One Ogg page of a capture.
struct Page<'a> {
    bytes: &'a [u8],
    bos: bool,
    eos: bool,
    serial: u32,
}

/// The complete pages at the start of `b` (a capture may end inside one). Panics on bytes that
/// are not pages: a listener must get whole pages from its first byte.
fn pages(b: &[u8]) -> Vec<Page<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while b.len() - at >= 27 {
        let p = &b[at..];
        assert_eq!(&p[..4], b"OggS", "not a page boundary at byte {at}");
        let n = usize::from(p[26]);
        let Some(table) = p.get(27..27 + n) else {
            break;
        };
        let len = 27 + n + table.iter().map(|&x| usize::from(x)).sum::<usize>();
        if p.len() < len {
            break;
        }
        out.push(Page {
            bytes: &p[..len],
            bos: p[5] & 0x02 != 0,
            eos: p[5] & 0x04 != 0,
            serial: u32::from_le_bytes([p[14], p[15], p[16], p[17]]),
        });
        at += len;
    }
    out
}

/// Runs `program` with `input` on stdin (a listener's pipe, not a seekable file); (success,
/// stdout, stderr).
async fn pipe(program: &str, args: &[&str], input: Vec<u8>) -> (bool, Vec<u8>, String) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(START, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} finished in time"))
        .unwrap_or_else(|e| panic!("{program} ran: {e}"));
    let _ = writer.await;
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// What a listener that joined must have got: the header pages of its first stream first, the
/// header pages of every stream before that stream's audio, every stream decoding with ffmpeg
/// without one error, and ffprobe finding `codec` in what it heard.
///
/// Each chained stream is decoded on its own: ffmpeg's command line reports "non monotonically
/// increasing dts" at every chain boundary of any chained Ogg file (a clean `cat a.ogg b.ogg`
/// too), which says nothing about the stream. Liquidsoap ends each Opus stream with a
/// zero-length packet on its end-of-stream page that ffmpeg's Opus parser refuses in any file;
/// that one page is left out of the decode.
async fn check_join(capture: &[u8], codec: &str) -> Result<f64, String> {
    let pages = pages(capture);
    let first = pages
        .first()
        .ok_or_else(|| format!("no complete page in {} bytes", capture.len()))?;
    if !first.bos {
        return Err(format!(
            "the first page (serial {:08x}) is not a stream's first header page",
            first.serial
        ));
    }
    // Split into chained streams; the last one may be cut short by the end of the recording.
    let mut links: Vec<Vec<u8>> = Vec::new();
    let mut known = Vec::new();
    let mut previous_bos = false;
    for p in &pages {
        if p.bos {
            known.push(p.serial);
            if !previous_bos {
                links.push(Vec::new());
            }
        } else if !known.contains(&p.serial) {
            return Err(format!(
                "a page of stream {:08x} before its header pages",
                p.serial
            ));
        }
        previous_bos = p.bos;
        let zero_length_tail =
            p.eos && p.bytes[27..27 + usize::from(p.bytes[26])].last() == Some(&0);
        if let Some(link) = links.last_mut()
            && !(codec == "opus" && zero_length_tail)
        {
            link.extend_from_slice(p.bytes);
        }
    }
    links.pop();
    let mut decoded = 0;
    for (i, link) in links.into_iter().enumerate() {
        let (ok, bytes, err) = pipe(
            "ffmpeg",
            &[
                "-nostdin", "-v", "error", "-i", "-", "-ac", "1", "-ar", "8000", "-f", "s16le", "-",
            ],
            link,
        )
        .await;
        if !ok || !err.trim().is_empty() {
            return Err(format!("stream {i} does not decode: {err}"));
        }
        decoded += bytes.len();
    }
    let (ok, out, err) = pipe(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            "-",
        ],
        capture.to_vec(),
    )
    .await;
    let out = String::from_utf8_lossy(&out);
    if !ok || out.trim() != codec || !err.trim().is_empty() {
        return Err(format!("ffprobe found {out:?}: {err}"));
    }
    Ok(decoded as f64 / 16_000.0)
}

/// Sends a listener's request and returns the reader positioned after the reply head.
async fn connect(addr: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /live HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: onda-test\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("request");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.expect("read head");
        assert!(n > 0, "closed before the reply head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                buf.starts_with(b"HTTP/1.0 200"),
                "{:?}",
                String::from_utf8_lossy(&buf)
            );
            return (stream, buf.split_off(i + 4));
        }
    }
}

/// A listener recorded for [`WINDOW`] after its reply head.
async fn listen(addr: String) -> Vec<u8> {
    let (mut stream, mut body) = connect(&addr).await;
    let until = Instant::now() + WINDOW;
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout_at(until.into(), stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body
}

/// A listener that follows the stream page by page and counts the chained streams that begin
/// (`links`) and the bytes since the last one began (`since`), so joins can be timed on what
/// the edge sends rather than on sleeps.
struct Watcher {
    links: Arc<AtomicU64>,
    since: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    async fn start(addr: &str) -> Watcher {
        let (mut stream, mut pending) = connect(addr).await;
        let links = Arc::new(AtomicU64::new(0));
        let since = Arc::new(AtomicU64::new(0));
        let (l, s) = (links.clone(), since.clone());
        let task = tokio::spawn(async move {
            let mut chunk = vec![0u8; 16 * 1024];
            let mut previous_bos = false;
            loop {
                let mut used = 0;
                for p in pages(&pending) {
                    used += p.bytes.len();
                    if p.bos && !previous_bos {
                        s.store(0, Ordering::SeqCst);
                        l.fetch_add(1, Ordering::SeqCst);
                    } else {
                        s.fetch_add(p.bytes.len() as u64, Ordering::SeqCst);
                    }
                    previous_bos = p.bos;
                }
                pending.drain(..used);
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                }
            }
        });
        Watcher { links, since, task }
    }

    fn links(&self) -> u64 {
        self.links.load(Ordering::SeqCst)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Joins right after each of three track changes and once in the middle of each track, and
/// checks every join.
async fn joins_decode(edge: &EdgeNode, codec: &str) {
    edge.wait_source("/live").await;
    let watcher = Watcher::start(&edge.addr).await;
    // The first stream the watcher sees is where it joined, not a change.
    wait_for("the first page", START, || async {
        (watcher.links() > 0).then_some(())
    })
    .await;
    let mut joins = Vec::new();
    for _ in 0..3 {
        let seen = watcher.links();
        wait_for("a track change", START, || async {
            (watcher.links() > seen).then_some(())
        })
        .await;
        // The edge has just sent the new stream's first page.
        joins.push((
            "after a track change",
            tokio::spawn(listen(edge.addr.clone())),
        ));
        let link = watcher.links();
        wait_for("mid-track", START, || async {
            (watcher.links() > link || watcher.since.load(Ordering::SeqCst) > 8_000).then_some(())
        })
        .await;
        joins.push(("mid-track", tokio::spawn(listen(edge.addr.clone()))));
    }
    let mut failures = Vec::new();
    for (i, (when, join)) in joins.into_iter().enumerate() {
        let capture = join.await.expect("listener");
        match check_join(&capture, codec).await {
            Ok(secs) => eprintln!(
                "OGG JOIN {i} ({when}): {} bytes, {secs:.2} s decoded",
                capture.len()
            ),
            Err(e) => failures.push(format!("join {i} ({when}): {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// status-json shows the ARTIST and TITLE comments of the playing track (each track's in turn),
/// and the now-playing title ("Artist - Title") follows them.
async fn tags_follow_the_tracks(edge: &EdgeNode) {
    for (artist, title, _) in TRACKS {
        wait_for(
            &format!("{artist} / {title} in status-json"),
            START,
            || async {
                let s = edge.source_status("/live").await?;
                (s["artist"] == artist && s["title"] == title).then_some(())
            },
        )
        .await;
    }
    let (_, stats) = edge.admin_get("/admin/stats").await;
    assert!(
        TRACKS
            .iter()
            .any(|(a, t, _)| stats.contains(&format!("<title>{a} - {t}</title>"))),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liquidsoap_vorbis_joins_after_track_changes_decode_and_tags_show() {
    let edge = EdgeNode::start(MOUNT).await;
    let dir = tempfile::tempdir().expect("dir");
    let tracks = tracks(dir.path()).await;
    let _source = liquidsoap(&edge, dir.path(), &tracks, "%vorbis(quality=0.2)");
    joins_decode(&edge, "vorbis").await;
    tags_follow_the_tracks(&edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liquidsoap_opus_joins_after_track_changes_decode_and_tags_show() {
    let edge = EdgeNode::start(MOUNT).await;
    let dir = tempfile::tempdir().expect("dir");
    let tracks = tracks(dir.path()).await;
    let _source = liquidsoap(&edge, dir.path(), &tracks, "%opus(bitrate=64)");
    joins_decode(&edge, "opus").await;
    tags_follow_the_tracks(&edge).await;
}

/// ices2 sends each file's own pages (its own headers and serial) as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ices2_joins_after_track_changes_decode_and_tags_show() {
    let edge = EdgeNode::start(MOUNT).await;
    let dir = tempfile::tempdir().expect("dir");
    let tracks = tracks(dir.path()).await;
    let _source = ices2(&edge, dir.path(), &tracks);
    joins_decode(&edge, "vorbis").await;
    tags_follow_the_tracks(&edge).await;
}

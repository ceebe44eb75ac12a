//! A live DJ taking a station over from the AutoDJ and handing it back: the listener connected
//! across both handovers must get a stream of whole MP3 frames. The DJ is a source client whose
//! bytes are not aligned on frames (it joins mid-frame and stops mid-frame), which is what a
//! Liquidsoap or ffmpeg source looks like to the AutoDJ at an arbitrary moment.

use onda_edge::frames::{find_frame, mpeg};
use onda_tests::edge::{EdgeNode, START, make_track};
use onda_tests::wait_for;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A listener recording the body of `/radio.mp3` until dropped.
struct Recorder {
    body: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(addr: &str) -> Recorder {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET /radio.mp3 HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("request");
        let body = Arc::new(Mutex::new(Vec::new()));
        let b = body.clone();
        let task = tokio::spawn(async move {
            let mut head = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let n = match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if head.is_empty() || !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    head.extend_from_slice(&chunk[..n]);
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        b.lock().expect("lock").extend_from_slice(&head[i + 4..]);
                    }
                } else {
                    b.lock().expect("lock").extend_from_slice(&chunk[..n]);
                }
            }
        });
        Recorder { body, task }
    }

    fn len(&self) -> usize {
        self.body.lock().expect("lock").len()
    }

    async fn wait_more(&self, n: usize) {
        let target = self.len() + n;
        wait_for(&format!("{target} bytes heard"), START, || async {
            (self.len() >= target).then_some(())
        })
        .await;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Walks `b` frame by frame from its first byte; the offset and reason of the first fault. The
/// last frame may be cut short by the end of the recording.
fn first_fault(b: &[u8]) -> Option<(usize, String)> {
    let mut at = 0;
    let mut frames = 0;
    while b.len() - at >= 4 {
        let Some(f) = mpeg(&b[at..]) else {
            let resync = find_frame(&b[at..], mpeg).map_or(0, |i| i);
            return Some((
                at,
                format!(
                    "no frame header after {frames} whole frames (the next frame is {resync} bytes on)"
                ),
            ));
        };
        at += f.len;
        frames += 1;
    }
    None
}

async fn ffmpeg_errors(input: Vec<u8>) -> String {
    let mut child = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", "-", "-f", "null", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(START, child.wait_with_output())
        .await
        .expect("ffmpeg finished in time")
        .expect("ffmpeg ran");
    let _ = writer.await;
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dj_joining_and_leaving_mid_frame_splices_no_partial_frame() {
    let media = tempfile::tempdir().expect("dir");
    let track = make_track(media.path(), "a.mp3", 440, 30, "Artist A", "Track A").await;
    let show = make_track(media.path(), "show.mp3", 1000, 5, "DJ", "Show").await;
    let config = format!(
        "[media]\ncache_dir = \"{}\"\n\n\
         [[mounts]]\npath = \"/radio.mp3\"\n\n\
         [[mounts]]\npath = \"/live\"\nsource_password = \"dj-secret\"\n\n\
         [[autodj]]\nname = \"Live FM\"\nlive_mount = \"/live\"\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}]\n\n\
         [[autodj.tracks]]\nfile = \"{}\"\nartist = \"Artist A\"\ntitle = \"Track A\"\n",
        media.path().join("cache").display(),
        track.display(),
    );
    let edge = EdgeNode::start(&config).await;
    edge.wait_source("/radio.mp3").await;
    let listener = Recorder::start(&edge.addr).await;
    listener.wait_more(16 * 1024).await;

    // The DJ: 128 kbps MP3 (the output's format and bitrate, so its frames go out as they are),
    // sent from the middle of a frame, in writes that ignore frame boundaries, in real time,
    // and stopping in the middle of a frame.
    let show = std::fs::read(&show).expect("show");
    let first = find_frame(&show, mpeg).expect("a frame in the show");
    let mut dj_bytes = &show[first + 200..];
    dj_bytes = &dj_bytes[..dj_bytes.len() - 150];
    let mut dj = TcpStream::connect(&edge.addr).await.expect("connect");
    dj.write_all(
        b"SOURCE /live HTTP/1.0\r\nAuthorization: Basic c291cmNlOmRqLXNlY3JldA==\r\n\
          Content-Type: audio/mpeg\r\nIce-Name: DJ\r\n\
          Ice-Audio-Info: bitrate=128;samplerate=44100;channels=2\r\n\r\n",
    )
    .await
    .expect("source request");
    let mut reply = [0u8; 64];
    let n = dj.read(&mut reply).await.expect("reply");
    assert!(
        reply[..n].starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );
    // 1003 bytes every 62.5 ms is 128 kbit/s.
    let mut pace = tokio::time::interval(Duration::from_micros(62_500));
    let mut sent = 0;
    let mut announced = false;
    for piece in dj_bytes.chunks(1003) {
        pace.tick().await;
        dj.write_all(piece).await.expect("DJ write");
        sent += piece.len();
        if !announced && sent > 16_000 {
            // Name the show, so the handover can be seen on /radio.mp3.
            let (s, _) = edge
                .admin_get("/admin/metadata?mount=/live&mode=updinfo&song=Live%20Show")
                .await;
            assert_eq!(s, 200);
            announced = true;
        }
    }
    wait_for("the show on /radio.mp3", START, || async {
        (edge.source_status("/radio.mp3").await?["title"] == "Live Show").then_some(())
    })
    .await;
    drop(dj);
    wait_for("the AutoDJ back on /radio.mp3", START, || async {
        (edge.source_status("/radio.mp3").await?["title"] == "Artist A - Track A").then_some(())
    })
    .await;
    listener.wait_more(16 * 1024).await;

    let heard = listener.body.lock().expect("lock").clone();
    if let Some((at, why)) = first_fault(&heard) {
        panic!("a partial frame at byte {at} of {}: {why}", heard.len());
    }
    let errors = ffmpeg_errors(heard.clone()).await;
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
    eprintln!("HANDOVER: {} bytes heard, all whole frames", heard.len());
}

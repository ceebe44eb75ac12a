//! Live video on a real `onda edge`: ffmpeg publishes an H.264 + AAC test pattern over RTMP
//! with a stream key, and ffprobe and ffmpeg play the HLS the edge makes of it. Wrong keys,
//! second publishers, changed keys and malformed RTMP are refused without harm to the node.

use onda_tests::edge::{EdgeNode, START, ffmpeg_rtmp};
use onda_tests::wait_for;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const STREAM: &str = "[hls]\nsegment_ms = 1000\nwindow = 4\n\n\
    [[live_streams]]\nname = \"show\"\nkey = \"show-key-0123456789\"\n";

/// The playlist once it lists at least `n` segments.
async fn playlist(edge: &EdgeNode, n: usize) -> String {
    let url = edge.url("/hls/show/index.m3u8");
    wait_for("the HLS playlist", Duration::from_secs(30), || async {
        let r = onda_shared::http::get(&url).await.ok()?;
        if r.status() != 200 {
            return None;
        }
        let text = r.text().await.ok()?;
        (text.matches("#EXTINF").count() >= n).then_some(text)
    })
    .await
}

/// ffprobe finds an H.264 video and an AAC audio track at `url`.
fn assert_both_tracks(url: &str) {
    let streams = ffprobe_streams(url);
    assert!(
        streams.contains("codec_name=h264|codec_type=video")
            && streams.contains("codec_name=aac|codec_type=audio"),
        "{url}: {streams}"
    );
}

fn ffprobe_streams(url: &str) -> String {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_type",
            "-of",
            "compact",
            url,
        ])
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What an HLS player fetched: media milliseconds of the segments (from their `#EXTINF`) and
/// bytes of playlists and segments.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Watched {
    media_ms: u64,
    bytes: u64,
}

/// A player with its own User-Agent: refreshes the playlist every 500 ms for `secs` and fetches
/// each new segment once, as hls.js and Safari do.
async fn hls_player(url: String, agent: &'static str, secs: f64) -> Watched {
    let http = onda_shared::http::client_builder()
        .user_agent(agent)
        .build()
        .expect("client");
    let mut got = Watched::default();
    let mut seen = std::collections::BTreeSet::new();
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    while std::time::Instant::now() < end {
        if let Ok(r) = http.get(&url).send().await
            && r.status() == 200
        {
            let base = r.url().clone();
            let text = r.text().await.unwrap_or_default();
            got.bytes += text.len() as u64;
            let mut duration_ms = 0;
            for line in text.lines() {
                if let Some(d) = line.strip_prefix("#EXTINF:") {
                    let d = d.trim_end_matches(',');
                    let (s, ms) = d.split_once('.').unwrap_or((d, "0"));
                    duration_ms =
                        s.parse::<u64>().unwrap_or(0) * 1000 + ms.parse::<u64>().unwrap_or(0);
                } else if !line.starts_with('#')
                    && !line.is_empty()
                    && seen.insert(line.to_string())
                {
                    let seg = base.join(line).expect("segment URL");
                    let body = http
                        .get(seg)
                        .send()
                        .await
                        .expect("segment")
                        .bytes()
                        .await
                        .expect("body");
                    got.bytes += body.len() as u64;
                    got.media_ms += duration_ms;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    got
}

/// Viewers are playback sessions: two players with their own User-Agents are two viewers, and
/// one that stops is gone after `hls.viewer_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_playback_sessions_that_time_out() {
    let (edge, rtmp) = EdgeNode::start_live(
        "[hls]\nsegment_ms = 1000\nviewer_timeout_ms = 2000\n\n\
         [[live_streams]]\nname = \"show\"\nkey = \"show-key-0123456789\"\n",
    )
    .await;
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    playlist(&edge, 1).await;
    let url = edge.url("/hls/show/index.m3u8");
    let long = tokio::spawn(hls_player(url.clone(), "player-long/1.0", 6.0));
    let short = tokio::spawn(hls_player(url, "player-short/1.0", 1.5));
    let viewers = || edge.metric("onda_edge_live_viewers{stream=\"show\"}");
    wait_for("two viewers", Duration::from_secs(5), || async {
        (viewers().await == 2.0).then_some(())
    })
    .await;
    short.await.expect("player");
    wait_for(
        "the short player timed out",
        Duration::from_secs(5),
        || async { (viewers().await == 1.0).then_some(()) },
    )
    .await;
    long.await.expect("player");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_publish_plays_as_hls_with_video_and_audio() {
    let (edge, rtmp) = EdgeNode::start_live(STREAM).await;
    assert_eq!(
        onda_shared::http::get(edge.url("/hls/show/index.m3u8"))
            .await
            .expect("get")
            .status(),
        404,
        "not live before a publish"
    );
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    let list = playlist(&edge, 3).await;
    assert!(list.starts_with("#EXTM3U\n"), "{list}");
    assert!(list.contains("#EXT-X-TARGETDURATION:"), "{list}");
    assert!(!list.contains("ENDLIST"), "{list}");

    // ffprobe finds both tracks, and ffmpeg decodes two segments' worth without an error.
    let url = edge.url("/hls/show/index.m3u8");
    assert_both_tracks(&url);
    let decode = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", &url, "-t", "2", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(decode.status.success(), "{decode:?}");
    assert!(
        decode.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&decode.stderr)
    );

    // Segments: MPEG-TS, cacheable, whole 188-byte packets; HEAD answers without a body.
    let seq = list
        .lines()
        .find(|l| l.ends_with(".ts"))
        .expect("a segment")
        .to_string();
    let r = onda_shared::http::get(edge.url(&format!("/hls/show/{seq}")))
        .await
        .expect("segment");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp2t");
    assert_eq!(r.headers()["cache-control"], "max-age=3600");
    let body = r.bytes().await.expect("body");
    assert!(!body.is_empty() && body.len() % 188 == 0 && body[0] == 0x47);
    let head = onda_shared::http::client()
        .head(edge.url(&format!("/hls/show/{seq}")))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        body.len().to_string().as_str()
    );
    let r = onda_shared::http::get(edge.url("/hls/show/index.m3u8"))
        .await
        .expect("playlist");
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    for missing in [
        "/hls/show/99999.ts",
        "/hls/show/x.ts",
        "/hls/other/index.m3u8",
    ] {
        let r = onda_shared::http::get(edge.url(missing))
            .await
            .expect("get");
        assert_eq!(r.status(), 404, "{missing}");
    }
    assert_eq!(
        edge.metric("onda_edge_live_publishing{stream=\"show\"}")
            .await,
        1.0
    );
    assert!(
        edge.metric("onda_edge_live_segments_total{stream=\"show\"}")
            .await
            >= 3.0
    );
    assert!(
        edge.metric("onda_edge_live_ingest_bytes_total{stream=\"show\"}")
            .await
            > 10_000.0
    );
}

/// The part a playlist's preload hint names, as (segment, part).
fn preload_hint(list: &str) -> (u64, u64) {
    let uri = list
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .unwrap_or_else(|| panic!("no preload hint in {list}"));
    let name = uri.split(['"', '?']).next().unwrap_or_default();
    let mut n = name.trim_end_matches(".ts").split('.');
    let seg = n
        .next()
        .and_then(|x| x.parse().ok())
        .expect("segment number");
    let part = n.next().and_then(|x| x.parse().ok()).expect("part number");
    (seg, part)
}

/// Low-latency HLS: the playlist lists parts of at most the part target with the LL-HLS tags,
/// a request for the hinted part waits for it and gets it, a blocking reload answers once the
/// asked-for part exists, bad reload parameters get 400, and ffprobe plays both the playlist
/// and a part alone with both tracks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_latency_hls_lists_parts_and_blocks_until_they_exist() {
    let (edge, rtmp) = EdgeNode::start_live(
        "[hls]\nsegment_ms = 2000\npart_ms = 400\nwindow = 4\n\n\
         [[live_streams]]\nname = \"show\"\nkey = \"show-key-0123456789\"\n",
    )
    .await;
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 50);
    let list = playlist(&edge, 2).await;
    assert!(list.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n"), "{list}");
    assert!(
        list.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.200\n"),
        "{list}"
    );
    assert!(
        list.contains("#EXT-X-PART-INF:PART-TARGET=0.400\n"),
        "{list}"
    );
    let durations: Vec<f64> = list
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
        .map(|l| {
            l.split(',')
                .next()
                .unwrap_or_default()
                .parse()
                .expect("duration")
        })
        .collect();
    assert!(durations.len() >= 5, "{list}");
    assert!(durations.iter().all(|d| *d <= 0.4), "{durations:?}");
    assert!(list.contains(".0.ts\",INDEPENDENT=YES\n"), "{list}");

    // The hinted part does not exist yet; asked for, it comes once complete.
    let (seg, part) = preload_hint(&list);
    let hinted = format!("URI=\"{seg}.{part}.ts\"");
    assert!(!list.contains(&format!("{hinted},")), "{list}");
    let r = onda_shared::http::get(edge.url(&format!("/hls/show/{seg}.{part}.ts")))
        .await
        .expect("hinted part");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp2t");
    let body = r.bytes().await.expect("part body");
    assert!(!body.is_empty() && body.len() % 188 == 0 && body[0] == 0x47);
    let now = onda_shared::http::get(edge.url("/hls/show/index.m3u8"))
        .await
        .expect("playlist")
        .text()
        .await
        .expect("text");
    assert!(now.contains(&format!("{hinted}\n")) || now.contains(&format!("{hinted},")));

    // A blocking reload for the part after the newest one answers once it is listed.
    let (seg, part) = preload_hint(&now);
    let r = onda_shared::http::get(edge.url(&format!(
        "/hls/show/index.m3u8?_HLS_msn={seg}&_HLS_part={part}"
    )))
    .await
    .expect("blocking reload");
    assert_eq!(r.status(), 200);
    let blocked = r.text().await.expect("text");
    assert!(
        blocked.contains(&format!("URI=\"{seg}.{part}.ts\""))
            || blocked.contains(&format!("URI=\"{}.0.ts\"", seg + 1)),
        "asked for {seg}.{part}: {blocked}"
    );
    for (query, why) in [
        (format!("_HLS_msn={}", seg + 5), "ahead"),
        ("_HLS_msn=x".to_string(), "whole number"),
        ("_HLS_part=1".to_string(), "needs _HLS_msn"),
    ] {
        let r = onda_shared::http::get(edge.url(&format!("/hls/show/index.m3u8?{query}")))
            .await
            .expect("bad reload");
        assert_eq!(r.status(), 400, "{query}");
        let text = r.text().await.expect("text");
        assert!(text.contains(why), "{query}: {text}");
    }

    // Players without LL-HLS play the same playlist by segments; a part alone has both tracks.
    let url = edge.url("/hls/show/index.m3u8");
    assert_both_tracks(&url);
    let first = blocked
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
        .and_then(|l| l.split('"').nth(1))
        .expect("a part URI")
        .to_string();
    assert!(
        first.ends_with(".0.ts"),
        "the first part listed is independent: {first}"
    );
    assert_both_tracks(&edge.url(&format!("/hls/show/{first}")));
}

/// The segment files under `dir` (`live-*/{stream}/{seq}.ts`), by sequence number.
fn segment_files(dir: &std::path::Path) -> std::collections::BTreeMap<u64, std::path::PathBuf> {
    let mut out = std::collections::BTreeMap::new();
    let entries = |d: &std::path::Path| {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    for edge_dir in entries(dir) {
        for stream_dir in entries(&edge_dir) {
            for file in entries(&stream_dir) {
                let seq = file
                    .file_name()
                    .and_then(|n| n.to_str()?.strip_suffix(".ts")?.parse().ok());
                if let Some(seq) = seq {
                    out.insert(seq, file);
                }
            }
        }
    }
    out
}

/// The sequence numbers of the segments `list` names.
fn listed(list: &str) -> Vec<u64> {
    list.lines()
        .filter_map(|l| l.strip_suffix(".ts")?.parse().ok())
        .collect()
}

/// Complete segments go to files in `hls.segment_dir` and are served from them (a file changed
/// behind the edge's back is what a viewer then gets, whole or as a part); files leave with the
/// window; what an edge that was killed left there is removed at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_segments_are_served_from_files_that_leave_with_the_window() {
    let dir = tempfile::tempdir().expect("dir");
    let stale = dir.path().join("live-killed").join("0");
    std::fs::create_dir_all(&stale).expect("stale dir");
    std::fs::write(stale.join("1.ts"), b"old").expect("stale file");
    let (edge, rtmp) = EdgeNode::start_live(&format!(
        "[hls]\nsegment_ms = 1000\npart_ms = 250\nwindow = 6\nsegment_dir = \"{}\"\n\n\
         [[live_streams]]\nname = \"show\"\nkey = \"show-key-0123456789\"\n",
        dir.path().display()
    ))
    .await;
    assert!(!stale.exists(), "a killed edge's segments are removed");
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    let get = |url: String| async move {
        let r = onda_shared::http::get(&url).await.ok()?;
        (r.status() == 200).then_some(())?;
        r.bytes().await.ok()
    };
    // The newest complete segment (its parts listed; five segments before it leaves the
    // window), its file written whole: the file is what is served.
    let (seq, file, written) = wait_for(
        "a listed segment in its file",
        Duration::from_secs(30),
        || async {
            let list = playlist(&edge, 3).await;
            let parts_of = *listed(&list).last()?;
            let file = segment_files(dir.path()).remove(&parts_of)?;
            let served = get(edge.url(&format!("/hls/show/{parts_of}.ts"))).await?;
            let on_disk = std::fs::read(&file).ok()?;
            (on_disk == served).then_some((parts_of, file, on_disk))
        },
    )
    .await;
    let segment_url = edge.url(&format!("/hls/show/{seq}.ts"));
    // The same length, other bytes: from now on only the file has them.
    let changed: Vec<u8> = written.iter().map(|b| !b).collect();
    std::fs::write(&file, &changed).expect("change the file");
    wait_for(
        "the segment read from its file",
        Duration::from_secs(10),
        || async { (get(segment_url.clone()).await? == changed).then_some(()) },
    )
    .await;
    let part = get(edge.url(&format!("/hls/show/{seq}.0.ts")))
        .await
        .expect("the segment's first part");
    assert!(!part.is_empty() && part.len() < changed.len());
    assert_eq!(part, changed[..part.len()], "a part is a range of the file");
    // Files go with the window: later, only the listed segments, the one being built and one
    // whose deletion is queued have one.
    wait_for("the first file gone", Duration::from_secs(30), || async {
        (!file.exists()).then_some(())
    })
    .await;
    let list = playlist(&edge, 3).await;
    let files = segment_files(dir.path());
    let oldest = listed(&list).first().copied().expect("listed");
    assert!(
        files.keys().all(|s| *s + 1 >= oldest) && files.len() <= 8,
        "files {:?} for the playlist {list}",
        files.keys().collect::<Vec<_>>()
    );
}

/// The command lines of the processes whose parent is `pid`, arguments joined by spaces.
fn children_cmdlines(pid: u32) -> Vec<String> {
    children(pid).into_iter().map(|(_, cmd)| cmd).collect()
}

/// The processes whose parent is `pid`: their ids and command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces, so split after its ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let id = e.file_name().to_str()?.parse().ok()?;
            (ppid == pid).then(|| (id, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}

/// The height of the video ffprobe finds at `url`.
fn ffprobe_height(url: &str) -> String {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=height",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .expect("ffprobe runs");
    // HLS lists its streams once per program too: the first line is the stream.
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// An ABR ladder: ffmpeg makes a 180p rendition of a 240p publish, the master playlist lists
/// the source and the rendition with bitrates and codecs, the rendition plays (ffprobe: H.264
/// at 180 lines, AAC) with its own LL-HLS parts, its traffic counts for the stream, it ends
/// when the publisher leaves, a republish right away gets the ladder again, and the ladder
/// ends (the source plays on) when its ffmpeg dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_make_an_abr_ladder_with_a_master_playlist() {
    let (edge, rtmp) = EdgeNode::start_live(
        "[hls]\nsegment_ms = 1000\n\n[[live_streams]]\nname = \"show\"\n\
         key = \"show-key-0123456789\"\n\
         renditions = [{ name = \"180p\", height = 180, video_kbps = 300 }]\n",
    )
    .await;
    let publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    let master_url = edge.url("/hls/show/master.m3u8");
    let master = wait_for(
        "a master playlist with the rendition",
        Duration::from_secs(60),
        || async {
            let r = onda_shared::http::get(&master_url).await.ok()?;
            let text = r.text().await.ok()?;
            (text.matches("#EXT-X-STREAM-INF:").count() == 2).then_some(text)
        },
    )
    .await;
    assert!(master.starts_with("#EXTM3U\n"), "{master}");
    let lines: Vec<&str> = master.lines().collect();
    let source = lines
        .iter()
        .position(|l| *l == "index.m3u8")
        .expect("the source");
    let rendition = lines
        .iter()
        .position(|l| *l == "180p/index.m3u8")
        .expect("the rendition");
    let bandwidth = |i: usize| -> u64 {
        lines[i - 1]
            .split("BANDWIDTH=")
            .nth(1)
            .and_then(|b| b.split(',').next())
            .and_then(|b| b.parse().ok())
            .expect("a bandwidth")
    };
    assert!(
        bandwidth(source) > 0 && bandwidth(rendition) > 0,
        "{master}"
    );
    assert!(
        lines[rendition - 1].contains("CODECS=\"avc1.")
            && lines[rendition - 1].contains(",mp4a.40.2\""),
        "{master}"
    );
    // The edge's ffmpeg shows no key and no URL of the node on its command line (which every
    // local user can read).
    let renditions_ffmpeg = children_cmdlines(edge.proc.pid());
    assert!(
        renditions_ffmpeg
            .iter()
            .any(|c| c.contains("-force_key_frames")),
        "{renditions_ffmpeg:?}"
    );
    for cmd in &renditions_ffmpeg {
        let hex_key = cmd
            .split(|c: char| !c.is_ascii_hexdigit())
            .any(|t| t.len() >= 32);
        assert!(
            !hex_key && !cmd.contains("rtmp://") && !cmd.contains("show-key"),
            "{cmd}"
        );
    }

    // The rendition is its own LL-HLS media playlist, at 180 lines; the source stays at 240.
    let list = onda_shared::http::get(edge.url("/hls/show/180p/index.m3u8"))
        .await
        .expect("rendition playlist")
        .text()
        .await
        .expect("text");
    assert!(list.contains("#EXT-X-PART:"), "{list}");
    assert_both_tracks(&edge.url("/hls/show/180p/index.m3u8"));
    assert_eq!(
        ffprobe_height(&edge.url("/hls/show/180p/index.m3u8")),
        "180"
    );
    assert_eq!(ffprobe_height(&edge.url("/hls/show/index.m3u8")), "240");
    // ffprobe follows the master playlist too.
    let streams = ffprobe_streams(&master_url);
    assert!(streams.contains("codec_type=video"), "{streams}");

    // Rendition traffic is the stream's; a rendition nobody configured is 404.
    let seg = list
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".ts"))
        .expect("a segment");
    let before = edge
        .metric("onda_edge_live_bytes_sent_total{stream=\"show\"}")
        .await;
    let body = onda_shared::http::get(edge.url(&format!("/hls/show/180p/{seg}")))
        .await
        .expect("segment")
        .bytes()
        .await
        .expect("body");
    assert!(!body.is_empty() && body.len() % 188 == 0);
    let after = edge
        .metric("onda_edge_live_bytes_sent_total{stream=\"show\"}")
        .await;
    assert!(after - before >= body.len() as f64, "{before} → {after}");
    let r = onda_shared::http::get(edge.url("/hls/show/1080p/index.m3u8"))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(
        edge.metric("onda_edge_live_publishing{stream=\"show\"}")
            .await,
        1.0,
        "renditions are not publishers of their own in the gauge"
    );

    // The publisher leaves: the source and the rendition end.
    publisher.terminate();
    let url = edge.url("/hls/show/180p/index.m3u8");
    let ended = wait_for("the rendition to end", Duration::from_secs(20), || async {
        let text = onda_shared::http::get(&url).await.ok()?.text().await.ok()?;
        text.contains("#EXT-X-ENDLIST").then_some(text)
    })
    .await;
    let last_seq = |list: &str| -> u64 {
        list.lines()
            .filter(|l| !l.starts_with('#') && l.ends_with(".ts"))
            .filter_map(|l| l.trim_end_matches(".ts").parse().ok())
            .max()
            .expect("a segment")
    };
    let before = last_seq(&ended);

    // A republish at once gets its ladder again, numbered on from the last publish.
    let _again = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    let list = wait_for(
        "the rendition live again",
        Duration::from_secs(60),
        || async {
            let master = onda_shared::http::get(&master_url)
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            if !master.contains("180p/index.m3u8") {
                return None;
            }
            let text = onda_shared::http::get(&url).await.ok()?.text().await.ok()?;
            (!text.contains("#EXT-X-ENDLIST") && last_seq(&text) > before).then_some(text)
        },
    )
    .await;
    assert!(list.contains("#EXT-X-DISCONTINUITY"), "{list}");

    // The renditions' ffmpeg dies mid-publish: the rendition ends and leaves the master
    // playlist, while the source plays on.
    // (The previous publish's ffmpeg may still be ending.)
    let pid = wait_for("one renditions ffmpeg", Duration::from_secs(20), || async {
        let found: Vec<u32> = children(edge.proc.pid())
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("-force_key_frames"))
            .map(|(pid, _)| pid)
            .collect();
        (found.len() == 1).then(|| found[0])
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let source = edge.url("/hls/show/index.m3u8");
    let master = wait_for(
        "the rendition to end with its ffmpeg",
        Duration::from_secs(30),
        || async {
            let text = onda_shared::http::get(&url).await.ok()?.text().await.ok()?;
            if !text.contains("#EXT-X-ENDLIST") {
                return None;
            }
            let master = onda_shared::http::get(&master_url)
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (!master.contains("180p/")).then_some(master)
        },
    )
    .await;
    assert!(master.contains("\nindex.m3u8"), "{master}");
    let playing = onda_shared::http::get(&source)
        .await
        .expect("source")
        .text()
        .await;
    let playing = playing.expect("text");
    let newest = last_seq(&playing);
    wait_for("the source to play on", Duration::from_secs(30), || async {
        let text = onda_shared::http::get(&source)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (!text.contains("#EXT-X-ENDLIST") && last_seq(&text) > newest).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_and_second_publishers_are_refused() {
    let (edge, rtmp) = EdgeNode::start_live(STREAM).await;
    let mut wrong = ffmpeg_rtmp(&format!("{rtmp}/live/not-the-key-000"), 25);
    let status = wrong.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "a wrong key is refused");
    assert!(
        wrong.stderr().contains("unknown or revoked stream key"),
        "{}",
        wrong.stderr()
    );
    let _first = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    playlist(&edge, 1).await;
    let mut second = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    let status = second.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "a second publisher is refused");
    assert!(
        second.stderr().contains("already has a publisher"),
        "{}",
        second.stderr()
    );
    // The first publisher is untouched: segments keep coming.
    let before = edge
        .metric("onda_edge_live_segments_total{stream=\"show\"}")
        .await;
    wait_for("more segments", Duration::from_secs(10), || async {
        (edge
            .metric("onda_edge_live_segments_total{stream=\"show\"}")
            .await
            > before)
            .then_some(())
    })
    .await;
    assert_eq!(
        edge.metric("onda_edge_rtmp_publish_refusals_total").await,
        2.0
    );
}

/// A changed key ends the publisher at once and only the new key publishes; a removed stream
/// ends its publisher too (through the library API the agent drives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_ends_the_publisher_and_the_old_key_is_refused() {
    let cfg = |key: &str| {
        let toml = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\n\
             [[live_streams]]\nname = \"show\"\nkey = \"{key}\"\n"
        );
        toml::from_str::<onda_edge::EdgeConfig>(&toml).expect("config")
    };
    let edge = onda_edge::Edge::start(cfg("old-key-0123456789"))
        .await
        .expect("edge");
    let rtmp = format!("rtmp://{}", edge.rtmp_addr().expect("rtmp"));
    let hls = format!("http://{}/hls/show/index.m3u8", edge.addr());
    let mut publisher = ffmpeg_rtmp(&format!("{rtmp}/live/old-key-0123456789"), 25);
    wait_for("the old key live", Duration::from_secs(30), || async {
        (onda_shared::http::get(&hls).await.ok()?.status() == 200).then_some(())
    })
    .await;
    edge.apply(cfg("new-key-0123456789")).expect("apply");
    let status = publisher.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "the publisher with the old key was cut");
    let mut old = ffmpeg_rtmp(&format!("{rtmp}/live/old-key-0123456789"), 25);
    assert!(!old.wait_exit(Duration::from_secs(20)).await.success());
    assert!(
        old.stderr().contains("unknown or revoked"),
        "{}",
        old.stderr()
    );
    let mut new = ffmpeg_rtmp(&format!("{rtmp}/live/new-key-0123456789"), 25);
    wait_for("the new key live", Duration::from_secs(30), || async {
        let text = onda_shared::http::get(&hls).await.ok()?.text().await.ok()?;
        text.contains("#EXT-X-DISCONTINUITY").then_some(())
    })
    .await;
    let mut none = cfg("new-key-0123456789");
    none.live_streams.clear();
    edge.apply(none).expect("apply");
    assert!(!new.wait_exit(Duration::from_secs(20)).await.success());
    edge.shutdown().await;
}

/// Garbage instead of a handshake, a handshake followed by garbage chunks, a chunk declaring a
/// 16 MiB message and then stopping, and a flood without a publish: each connection is closed,
/// and the node goes on serving (a real publish works afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rtmp_never_takes_the_node_down() {
    // A short handshake timeout, so a connection that stops mid-message is closed soon.
    let (edge, rtmp) =
        EdgeNode::start_live(&format!("[limits]\nheader_timeout_ms = 2000\n\n{STREAM}")).await;
    let addr = rtmp.trim_start_matches("rtmp://").to_string();
    let mut seed = 0x2545_f491_u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    // A valid C0+C1 (version 3, 1536 bytes), so the server answers and waits for C2.
    let mut c0c1 = vec![3u8];
    c0c1.extend(vec![0u8; 8]);
    c0c1.extend(random(1528));
    let chunk_16mib = {
        // Basic header fmt 0, csid 3; timestamp 0; length 0xFFFFFF; type 20 (AMF0 command);
        // stream id 0; then a few bytes of it and no more.
        let mut v = vec![0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
        v.extend(random(100));
        v
    };
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("random bytes", vec![random(4096)]),
        ("wrong version", vec![vec![9u8; 1537]]),
        (
            "handshake then garbage",
            vec![c0c1.clone(), random(1536), random(8192)],
        ),
        (
            "a 16 MiB message cut short",
            vec![c0c1.clone(), random(1536), chunk_16mib],
        ),
        (
            "a flood without publishing",
            vec![c0c1.clone(), random(1536), random(3 << 20)],
        ),
    ];
    for (what, sends) in cases {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let run = async {
            for b in sends {
                if s.write_all(&b).await.is_err() {
                    break;
                }
            }
            // The server ends the connection (or times it out); read until it does.
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection was never closed"));
        let health = onda_shared::http::get(edge.url("/healthz"))
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200, "{what}");
    }
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    playlist(&edge, 1).await;
}

/// The two inputs that panic rml_rtmp 0.8 (a second chunk stream starting while a message is
/// partial; an AMF0 command of one value), each before any key is shown: only that connection
/// ends, the node goes on serving, and the stream's key then publishes normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_inputs_that_panic_the_library_end_only_their_connection() {
    let (mut edge, rtmp) = EdgeNode::start_live(STREAM).await;
    let addr = rtmp.trim_start_matches("rtmp://").to_string();
    let cases = [
        (
            "interleaved chunk streams",
            onda_tests::rtmp::interleaved_chunk_streams(128),
        ),
        (
            "a short AMF0 command",
            onda_tests::rtmp::short_amf0_command(),
        ),
    ];
    for (what, bytes) in cases {
        let mut raw = onda_tests::rtmp::RawRtmp::connect(&addr).await;
        raw.send_and_wait_close(&bytes).await;
        let health = onda_shared::http::get(edge.url("/healthz"))
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200, "{what}");
    }
    // Both were contained as the end of their connection, not as a crashed task.
    edge.proc
        .wait_log_word(
            "made the RTMP library fail in the chunk or AMF0 decoder",
            START,
        )
        .await;
    let logs = edge.proc.stderr();
    assert_eq!(
        logs.matches("made the RTMP library fail").count(),
        2,
        "{logs}"
    );
    // One log line each, with the place, and no panic message or backtrace per connection.
    assert!(logs.contains("deserializer.rs:371"), "{logs}");
    assert!(!logs.contains("panicked at"), "{logs}");
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    playlist(&edge, 1).await;
}

/// A publish whose connection dies inside the RTMP library, and a publisher killed with
/// SIGKILL, both give their key back at once: the next publish with it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_fails_or_is_killed_releases_its_key() {
    let (edge, rtmp) = EdgeNode::start_live(STREAM).await;
    let addr = rtmp.trim_start_matches("rtmp://").to_string();
    let mut raw = onda_tests::rtmp::RawRtmp::connect(&addr).await;
    raw.publish("show-key-0123456789").await;
    wait_for("the raw publish live", Duration::from_secs(10), || async {
        (edge
            .metric("onda_edge_live_publishing{stream=\"show\"}")
            .await
            == 1.0)
            .then_some(())
    })
    .await;
    raw.send_and_wait_close(&onda_tests::rtmp::short_amf0_command())
        .await;
    // The key is free again: a second raw publish is accepted, then ffmpeg's.
    let mut again = onda_tests::rtmp::RawRtmp::connect(&addr).await;
    again.publish("show-key-0123456789").await;
    drop(again);
    let first = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    playlist(&edge, 1).await;
    first.signal("KILL");
    let mut second = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
    wait_for("the republish live", Duration::from_secs(30), || async {
        let list = onda_shared::http::get(edge.url("/hls/show/index.m3u8"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        list.contains("#EXT-X-DISCONTINUITY").then_some(())
    })
    .await;
    assert!(second.try_exit().is_none(), "{}", second.stderr());
}

/// A control plane with `nodes` joined agents (RTMP on, as the harness's agent.toml sets) and
/// a premium tenant: the cluster and the tenant's key.
struct LiveCluster {
    fx: onda_tests::fixture::ClusterFixture,
    key: String,
}

async fn live_cluster(nodes: &[&str], relay_threshold: u64) -> LiveCluster {
    use onda_tests::fixture::{ClusterFixture, ClusterSpec};
    let fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: "live-test-admin-token-0123456789",
        node_ttl_ms: 1000,
        relay_threshold,
        nodes,
        ..ClusterSpec::default()
    })
    .await;
    let key = fx.cp.tenant_key("Creator").await;
    LiveCluster { fx, key }
}

/// The cluster path: a tenant creates a live stream in the panel API, the leader places it on
/// a node with an RTMP ingest, ffmpeg publishes to the ingest URL the API gives, and a viewer
/// plays it through the control plane's `/watch/{slug}.m3u8` redirector. Rotating the key cuts
/// the publisher and refuses the old key; the plan's `max_live_streams` holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_goes_through_the_cluster_and_plays_through_the_redirector() {
    use reqwest::Method;
    use serde_json::json;
    let c = live_cluster(&["live-1"], 500).await;
    let (cp, key) = (&c.fx.cp, c.key.clone());
    let (stream, ingest) = cp
        .placed_stream(&key, json!({"name": "Launch Party"}))
        .await;
    let id = stream["id"].as_str().expect("id").to_string();
    let slug = stream["slug"].as_str().expect("slug").to_string();
    let publish = ingest["publish_url"].as_str().expect("url").to_string();
    assert!(publish.starts_with("rtmp://127.0.0.1:"), "{ingest}");
    assert_eq!(ingest["node"], "live-1");
    assert_eq!(ingest["watch_path"], format!("/watch/{slug}.m3u8"));
    let mut publisher = ffmpeg_rtmp(&publish, 25);

    let watch = format!("{}/watch/{slug}.m3u8", cp.api);
    wait_for("the stream watchable", Duration::from_secs(30), || async {
        let text = onda_shared::http::get(&watch)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (text.matches("#EXTINF").count() >= 2).then_some(())
    })
    .await;
    assert_both_tracks(&watch);

    // Two players through the redirector: two viewers in the API, and the usage billed is
    // exactly the media time and bytes they fetched. First the probes above time out (the
    // harness's viewer timeout is 2 s) and their usage is stored.
    let usage_total = async || {
        let (_, u) = cp
            .tenant_call(
                &key,
                Method::GET,
                &format!("/v1/streams/{id}/usage?granularity=day"),
                None,
            )
            .await;
        let t = &u["total"];
        (
            t["listener_ms"].as_u64().unwrap_or(0),
            t["bytes_sent"].as_u64().unwrap_or(0),
            t["sessions"].as_u64().unwrap_or(0),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = None;
    let before = loop {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (_, v) = cp
            .tenant_call(
                &key,
                Method::GET,
                &format!("/v1/streams/{id}/viewers"),
                None,
            )
            .await;
        let now = usage_total().await;
        if v["viewers"] == 0 && last == Some(now) {
            break now;
        }
        last = Some(now);
        assert!(
            std::time::Instant::now() < deadline,
            "viewers never went to 0 or usage never settled: {v} {now:?}"
        );
    };
    let a = tokio::spawn(hls_player(watch.clone(), "viewer-a/1.0", 4.0));
    let b = tokio::spawn(hls_player(watch.clone(), "viewer-b/1.0", 4.0));
    let seen = wait_for(
        "two viewers in the API",
        Duration::from_secs(10),
        || async {
            let (_, v) = cp
                .tenant_call(
                    &key,
                    Method::GET,
                    &format!("/v1/streams/{id}/viewers"),
                    None,
                )
                .await;
            (v["viewers"] == 2).then_some(v)
        },
    )
    .await;
    assert_eq!(
        (&seen["publishing"], &seen["node"]),
        (&json!(true), &json!("live-1")),
        "{seen}"
    );
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    assert!(a.media_ms > 0 && b.media_ms > 0, "{a:?} {b:?}");
    let want = (
        before.0 + a.media_ms + b.media_ms,
        before.1 + a.bytes + b.bytes,
        before.2 + 2,
    );
    let billed = wait_for(
        "the viewers' usage stored",
        Duration::from_secs(20),
        || async {
            let now = usage_total().await;
            (now == want).then_some(now)
        },
    )
    .await;
    eprintln!("viewers billed {billed:?} (before {before:?}), as fetched: {a:?} + {b:?}");

    // A new key: the publisher is cut when the node applies it, the old key is refused.
    let (s, rotated) = cp
        .tenant_call(
            &key,
            Method::POST,
            &format!("/v1/streams/{id}/stream-key"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{rotated}");
    assert_ne!(rotated["stream_key"], stream["stream_key"]);
    assert!(
        !publisher.wait_exit(Duration::from_secs(20)).await.success(),
        "the publisher with the old key was cut"
    );
    let mut old = ffmpeg_rtmp(&publish, 25);
    assert!(!old.wait_exit(Duration::from_secs(20)).await.success());
    assert!(
        old.stderr().contains("unknown or revoked"),
        "{}",
        old.stderr()
    );

    // A token stream: viewers need a token the tenant mints; the redirector passes it on.
    let (s, paid) = cp
        .tenant_call(
            &key,
            Method::POST,
            "/v1/streams",
            Some(json!({"name": "Pay Per View", "access": "token"})),
        )
        .await;
    assert_eq!((s, paid["access"].as_str()), (201, Some("token")), "{paid}");
    let paid_id = paid["id"].as_str().expect("id").to_string();
    let (s, refused) = cp
        .tenant_call(
            &key,
            Method::POST,
            &format!("/v1/streams/{id}/playback-tokens"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 409, "a public stream needs no token: {refused}");
    let (s, minted) = cp
        .tenant_call(
            &key,
            Method::POST,
            &format!("/v1/streams/{paid_id}/playback-tokens"),
            Some(json!({"ttl_seconds": 600, "viewer_id": "buyer-1"})),
        )
        .await;
    assert_eq!(s, 201, "{minted}");
    let paid_ingest = wait_for(
        "the token stream placed",
        Duration::from_secs(30),
        || async {
            let (_, i) = cp
                .tenant_call(
                    &key,
                    Method::GET,
                    &format!("/v1/streams/{paid_id}/ingest"),
                    None,
                )
                .await;
            i["publish_url"].as_str().map(str::to_string)
        },
    )
    .await;
    let _paid_publisher = ffmpeg_rtmp(&paid_ingest, 25);
    let with_token = format!(
        "{}{}",
        cp.api,
        minted["watch_path"].as_str().expect("watch_path")
    );
    wait_for(
        "the token stream watchable",
        Duration::from_secs(30),
        || async {
            let text = onda_shared::http::get(&with_token)
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("#EXTINF").then_some(())
        },
    )
    .await;
    let probed = ffprobe_streams(&with_token);
    assert!(
        probed.contains("codec_type=video") && probed.contains("codec_type=audio"),
        "{probed}"
    );
    let without = onda_shared::http::get(format!(
        "{}/watch/{}.m3u8",
        cp.api,
        paid["slug"].as_str().expect("slug")
    ))
    .await
    .expect("watch");
    assert_eq!(
        without.status(),
        403,
        "redirected to the edge, which refuses"
    );
    assert_ppv_playback_opens_the_edge(cp, &key, &paid_id).await;

    // Premium allows two live streams: a third is refused.
    let (s, refused) = cp
        .tenant_call(
            &key,
            Method::POST,
            "/v1/streams",
            Some(json!({"name": "Third"})),
        )
        .await;
    assert_eq!(
        (s, refused["limit"].as_str()),
        (403, Some("max_live_streams")),
        "{refused}"
    );
    let (s, _) = cp
        .call(Method::GET, "/watch/no-such-stream.m3u8", None)
        .await;
    assert_eq!(s, 404);
}

/// The token stream `id` sold pay-per-view by a creator: a fan buys it from their wallet, and
/// the token `POST /v1/me/streams/{id}/playback` answers opens its playlist through the
/// redirector and the edge (which checks it as any other token).
async fn assert_ppv_playback_opens_the_edge(
    cp: &onda_tests::cluster::ControlPlane,
    key: &str,
    id: &str,
) {
    use reqwest::Method;
    use serde_json::json;
    for (user, body) in [("star", json!({"creator": true})), ("fan", json!({}))] {
        let (s, u) = cp
            .tenant_call(key, Method::PUT, &format!("/v1/users/{user}"), Some(body))
            .await;
        assert_eq!(s, 201, "{u}");
    }
    let (s, t) = cp
        .tenant_call(key, Method::POST, "/v1/users/fan/tokens", Some(json!({})))
        .await;
    assert_eq!(s, 201, "{t}");
    let fan = t["token"].as_str().expect("token").to_string();
    cp.credit(key, "fan", 1000).await;
    let (s, ppv) = cp
        .tenant_call(
            key,
            Method::PATCH,
            &format!("/v1/streams/{id}"),
            Some(json!({"access": "pay_per_view", "creator_id": "star", "price": 300})),
        )
        .await;
    assert_eq!(s, 200, "{ppv}");
    let playback = format!("/v1/me/streams/{id}/playback");
    let (s, refused) = cp.tenant_call(&fan, Method::POST, &playback, None).await;
    assert_eq!(s, 402, "{refused}");
    let bought = cp
        .http
        .post(format!("{}/v1/me/streams/{id}/purchase", cp.api))
        .bearer_auth(&fan)
        .header("idempotency-key", "live-buy")
        .send()
        .await
        .expect("purchase");
    assert_eq!(bought.status(), 201);
    let (s, token) = cp.tenant_call(&fan, Method::POST, &playback, None).await;
    assert_eq!(s, 201, "{token}");
    let url = format!("{}{}", cp.api, token["watch_path"].as_str().expect("path"));
    wait_for(
        "the bought stream's playlist",
        Duration::from_secs(30),
        || async {
            let text = onda_shared::http::get(&url).await.ok()?.text().await.ok()?;
            text.contains("#EXTINF").then_some(())
        },
    )
    .await;
    // The fan joins the stream's chat: it is on the air, and the room hears the viewers the
    // edges count (the fan's own playback among them) every few seconds.
    let mut sio = onda_tests::realtime::Sio::start(&cp.api).await;
    sio.connect("fan", &fan).await.expect("the fan connects");
    let joined = sio
        .emit("fan", "join-stream", json!({ "streamId": id }))
        .await;
    assert_eq!(joined["ok"], json!(true), "{joined}");
    assert_eq!(joined["stream"]["live"], json!(true), "{joined}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Watching: the edge counts a viewer while their playlist requests go on.
        let _ = onda_shared::http::get(&url).await;
        let count = sio
            .event_within("fan", "viewer-count", Duration::from_secs(2))
            .await;
        if let Some(c) = count.filter(|c| c["viewers"].as_u64() >= Some(1)) {
            assert_eq!(
                (&c["streamId"], &c["live"]),
                (&json!(id), &json!(true)),
                "{c}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no viewer-count with the fan watching"
        );
    }
}

/// A token stream: the playlist and every segment need a valid token; a missing, expired or
/// forged one is a 403 naming why, and the playlist hands its token on in the segment URIs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stream_refuses_missing_expired_and_forged_tokens() {
    use onda_shared::playback::sign;
    let secret = "edge-playback-secret-0123456789";
    let (edge, rtmp) = EdgeNode::start_live(&format!(
        "[hls]\nsegment_ms = 1000\n\n[[live_streams]]\nname = \"paid\"\n\
         key = \"paid-key-0123456789\"\nplayback_secret = \"{secret}\"\n"
    ))
    .await;
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/paid-key-0123456789"), 25);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let good = sign(secret, "paid", now + 600, "buyer-7");
    let list_url = |token: &str| edge.url(&format!("/hls/paid/index.m3u8?token={token}"));
    let list = wait_for(
        "the token stream's playlist",
        Duration::from_secs(30),
        || async {
            let r = onda_shared::http::get(list_url(&good)).await.ok()?;
            let text = r.text().await.ok()?;
            text.contains("#EXTINF").then_some(text)
        },
    )
    .await;
    let segment = list
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(".ts"))
        .expect("a segment")
        .to_string();
    assert!(segment.ends_with(&format!("?token={good}")), "{list}");
    // Parts and the preload hint carry the token too.
    let part = list
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
        .and_then(|l| l.split('"').nth(1))
        .expect("a part")
        .to_string();
    assert!(part.ends_with(&format!("?token={good}")), "{list}");
    let hint = list
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .expect("a preload hint");
    assert!(hint.ends_with(&format!("?token={good}\"")), "{list}");
    let bare_part = part.split('?').next().expect("part").to_string();
    let base = edge.url("");
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move {
            let r = onda_shared::http::get(url).await.expect("get");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let bare = segment.split('?').next().expect("segment");
    let expired = sign(secret, "paid", now - 1, "buyer-7");
    let forged = sign("not-the-secret-0000000000", "paid", now + 600, "buyer-7");
    let other = sign(secret, "another-stream", now + 600, "buyer-7");
    for (what, path, status, why) in [
        (
            "playlist without a token",
            "/hls/paid/index.m3u8".to_string(),
            403,
            "needs a playback token",
        ),
        (
            "segment without a token",
            format!("/hls/paid/{bare}"),
            403,
            "needs a playback token",
        ),
        (
            "expired",
            format!("/hls/paid/index.m3u8?token={expired}"),
            403,
            "expired",
        ),
        (
            "part without a token",
            format!("/hls/paid/{bare_part}"),
            403,
            "needs a playback token",
        ),
        (
            "part with a forged token",
            format!("/hls/paid/{bare_part}?token={forged}"),
            403,
            "not valid",
        ),
        (
            "forged",
            format!("/hls/paid/{bare}?token={forged}"),
            403,
            "not valid",
        ),
        (
            "another stream's",
            format!("/hls/paid/index.m3u8?token={other}"),
            403,
            "not valid",
        ),
        (
            "garbage",
            "/hls/paid/index.m3u8?token=%0Aevil".to_string(),
            403,
            "malformed",
        ),
    ] {
        let (s, body) = get(path).await;
        assert_eq!(s, status, "{what}: {body}");
        assert!(body.contains(why), "{what}: {body}");
    }
    let (s, _) = get(format!("/hls/paid/{segment}")).await;
    assert_eq!(s, 200, "a segment with the token");
    let (s, _) = get(format!("/hls/paid/{part}")).await;
    assert_eq!(s, 200, "a part with the token");
    let streams = ffprobe_streams(&list_url(&good));
    assert!(streams.contains("codec_type=video"), "{streams}");
}

/// A webhook receiver on loopback: answers every request with `status` (or never, for 0) and
/// keeps the form bodies it received.
async fn webhook(status: u16) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then a body of Content-Length bytes.
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            record.lock().expect("lock").push(body.to_string());
                            break;
                        }
                    }
                }
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, seen)
}

/// nginx-rtmp's webhooks: `on_publish` decides (2xx allows, another status or no answer in
/// time refuses) and gets the key, `on_publish_done` hears the publisher leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_publish_webhooks_allow_refuse_and_hear_the_end() {
    for (status, allowed) in [(200u16, true), (403, false), (0, false)] {
        let (hook, seen) = webhook(status).await;
        let (done, done_seen) = webhook(200).await;
        let dir = tempfile::tempdir().expect("dir");
        let toml = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n[rtmp]\nlisten = \"127.0.0.1:0\"\n\
             on_publish = \"{hook}\"\non_publish_done = \"{done}\"\nwebhook_timeout_ms = 500\n\n\
             [hls]\nsegment_ms = 1000\n\n\
             [[live_streams]]\nname = \"show\"\nkey = \"show-key-0123456789\"\n"
        );
        std::fs::write(dir.path().join("edge.toml"), toml).expect("write");
        let mut proc = onda_tests::process::Proc::start_in(
            "onda edge",
            dir,
            &["edge", "--config", "edge.toml"],
            &[],
        );
        let http = proc
            .wait_log_word("edge listening on ", Duration::from_secs(30))
            .await;
        let rtmp = proc
            .wait_log_word("RTMP ingest on ", Duration::from_secs(30))
            .await;
        let mut publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 25);
        if allowed {
            let url = format!("{http}/hls/show/index.m3u8");
            wait_for(
                "the allowed publish live",
                Duration::from_secs(30),
                || async {
                    (onda_shared::http::get(&url).await.ok()?.status() == 200).then_some(())
                },
            )
            .await;
            publisher.terminate();
            wait_for("on_publish_done", Duration::from_secs(20), || async {
                done_seen.lock().expect("lock").first().cloned()
            })
            .await;
            let body = done_seen.lock().expect("lock")[0].clone();
            assert!(
                body.contains("call=publish_done") && body.contains("stream=show"),
                "{body}"
            );
        } else {
            assert!(
                !publisher.wait_exit(Duration::from_secs(20)).await.success(),
                "status {status}"
            );
            assert!(
                publisher.stderr().contains("on_publish"),
                "{}",
                publisher.stderr()
            );
        }
        let body = seen
            .lock()
            .expect("lock")
            .first()
            .cloned()
            .expect("on_publish called");
        assert!(
            body.contains("call=publish")
                && body.contains("name=show-key-0123456789")
                && body.contains("app=live")
                && body.contains("addr=127.0.0.1"),
            "{body}"
        );
    }
}

/// An edge that is not the stream's origin serves it: with viewers above the relay threshold
/// the leader adds a relay, which pulls the origin's segments and plays them to its own
/// viewers (ffprobe finds both tracks there); a publish to the relay is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_edge_serves_a_popular_stream_from_its_origin() {
    use reqwest::Method;
    use serde_json::json;
    // A relay as soon as a carrier has more than one viewer.
    let c = live_cluster(&["live-a", "live-b"], 1).await;
    let cp = &c.fx.cp;
    let (a, b) = (&c.fx.agents[0], &c.fx.agents[1]);
    let (stream, ingest) = cp.placed_stream(&c.key, json!({"name": "Finals"})).await;
    let slug = stream["slug"].as_str().expect("slug").to_string();
    let _publisher = ffmpeg_rtmp(ingest["publish_url"].as_str().expect("url"), 25);
    let relay = if ingest["node"] == "live-a" { &b } else { &a };
    let origin = if ingest["node"] == "live-a" { &a } else { &b };
    let watch = format!("{}/watch/{slug}.m3u8", cp.api);
    wait_for("the stream watchable", Duration::from_secs(30), || async {
        let text = onda_shared::http::get(&watch)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("#EXTINF").then_some(())
    })
    .await;
    // Three viewers on the origin: more than the threshold.
    let players: Vec<_> = ["p1/1.0", "p2/1.0", "p3/1.0"]
        .into_iter()
        .map(|ua| {
            tokio::spawn(hls_player(
                format!("{}/hls/{slug}/index.m3u8", origin.edge_url),
                ua,
                25.0,
            ))
        })
        .collect();
    let on_relay = format!("{}/hls/{slug}/index.m3u8", relay.edge_url);
    wait_for(
        "the relay serving the stream",
        Duration::from_secs(30),
        || async {
            let text = onda_shared::http::get(&on_relay)
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.matches("#EXTINF").count() >= 2).then_some(())
        },
    )
    .await;
    assert_both_tracks(&on_relay);
    // Publishers go to the origin, not to a relay.
    let (_, nodes) = cp.call(Method::GET, "/v1/nodes", None).await;
    let relay_name = if ingest["node"] == "live-a" {
        "live-b"
    } else {
        "live-a"
    };
    let relay_rtmp = nodes["items"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == relay_name)
        .and_then(|n| n["rtmp_url"].as_str())
        .expect("the relay's RTMP address")
        .to_string();
    let key_part = ingest["stream_key"].as_str().expect("key");
    let mut wrong = ffmpeg_rtmp(&format!("{relay_rtmp}/live/{key_part}"), 25);
    assert!(!wrong.wait_exit(Duration::from_secs(20)).await.success());
    assert!(
        wrong.stderr().contains("relays the stream"),
        "{}",
        wrong.stderr()
    );
    for p in players {
        p.abort();
    }
}

/// The plan's ABR ladder reaches the origin edge: a plan with a 180p rung (and bad ladders
/// refused with a reason), a stream of a tenant on it published at 240p, and
/// `/watch/{slug}.m3u8` redirecting to the origin's master playlist, which ffprobe plays and
/// which lists the source and the 180p rendition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_ladder_gives_streams_renditions_through_the_cluster() {
    use reqwest::Method;
    let c = live_cluster(&["live-a"], 1000).await;
    for (ladder, why) in [
        (
            serde_json::json!([{"height": 181, "video_kbps": 300}]),
            "height must be even",
        ),
        (
            serde_json::json!([{"height": 180, "video_kbps": 50}]),
            "video_kbps must be 100 to 20000",
        ),
        (
            serde_json::json!([{"height": 180, "video_kbps": 300}, {"height": 180, "video_kbps": 200}]),
            "height 180 twice",
        ),
    ] {
        let (s, body) =
            c.fx.cp
                .call(
                    Method::PATCH,
                    "/v1/plans/plan_premium",
                    Some(serde_json::json!({"limits": {"live_renditions": ladder}})),
                )
                .await;
        assert_eq!(s, 422, "{body}");
        assert!(body.to_string().contains(why), "{body}");
    }
    let (s, plan) =
        c.fx.cp.call(
            Method::PATCH,
            "/v1/plans/plan_premium",
            Some(serde_json::json!({"limits": {"live_renditions": [{"height": 180, "video_kbps": 300}]}})),
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["limits"]["live_renditions"][0]["height"], 180);
    let (stream, ingest) =
        c.fx.cp
            .placed_stream(&c.key, serde_json::json!({"name": "Ladder"}))
            .await;
    let slug = stream["slug"].as_str().expect("slug").to_string();
    let _publisher = ffmpeg_rtmp(ingest["publish_url"].as_str().expect("url"), 25);
    let watch = format!("{}/watch/{slug}.m3u8", c.fx.cp.api);
    let no_redirect = onda_shared::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let location = wait_for("the ladder on the air", Duration::from_secs(60), || async {
        let r = no_redirect.get(&watch).send().await.ok()?;
        let to = r.headers().get("location")?.to_str().ok()?.to_string();
        let master = onda_shared::http::get(&to).await.ok()?.text().await.ok()?;
        (master.matches("#EXT-X-STREAM-INF:").count() == 2).then_some(to)
    })
    .await;
    assert!(
        location.ends_with(&format!("/hls/{slug}/master.m3u8")),
        "{location}"
    );
    assert_both_tracks(&watch);
    let rendition = location.replace("master.m3u8", "180p/index.m3u8");
    assert_eq!(ffprobe_height(&rendition), "180");
}

/// One HTTP response read off a raw connection: its head and its body (by Content-Length).
async fn read_response(conn: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(START, conn.read(&mut byte))
            .await
            .expect("a response in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "closed inside a head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("ASCII head");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("Content-Length");
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.expect("body");
    (head, body)
}

/// HLS, status and admin answers keep HTTP/1.1 connections for the next request (pipelined
/// ones too) unless the client says `Connection: close`, and an HTTP/1.0 client gets its
/// answer and the close it expects; a player polling a live stream opens one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_and_status_routes_keep_connections_alive() {
    let (edge, rtmp) = EdgeNode::start_live(STREAM).await;
    let _publisher = ffmpeg_rtmp(&format!("{rtmp}/live/show-key-0123456789"), 30);
    playlist(&edge, 1).await;

    let mut conn = tokio::net::TcpStream::connect(&edge.addr)
        .await
        .expect("connect");
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: edge\r\n{extra}\r\n").into_bytes()
    };
    // Two requests in one write: both answered, in order, on the one connection.
    let mut two = get("/hls/show/index.m3u8", "");
    two.extend(get("/status-json.xsl", ""));
    conn.write_all(&two).await.expect("write");
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
    assert!(body.starts_with(b"#EXTM3U"));
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        body.starts_with(b"{\"icestats\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A HEAD and an admin refusal on the same connection.
    conn.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await.expect("HEAD answer");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).expect("ASCII");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    conn.write_all(&get("/admin/listmounts", ""))
        .await
        .expect("write");
    let (head, _) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    // `Connection: close` gets the answer and the end of the connection.
    conn.write_all(&get("/healthz", "Connection: close\r\n"))
        .await
        .expect("write");
    let (head, body) = read_response(&mut conn).await;
    assert!(
        head.starts_with("HTTP/1.0 200 ") && head.contains("Connection: Close"),
        "{head}"
    );
    assert_eq!(body, b"ok\n");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.expect("closed");
    assert!(rest.is_empty());
    // HTTP/1.0 without keep-alive: closed after the answer.
    let mut old = tokio::net::TcpStream::connect(&edge.addr)
        .await
        .expect("connect");
    old.write_all(b"GET /hls/show/index.m3u8 HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut old).await;
    assert!(head.starts_with("HTTP/1.0 200 "), "{head}");
    let mut rest = Vec::new();
    old.read_to_end(&mut rest).await.expect("closed");
    assert!(rest.is_empty());

    // A polling player (one HTTP client, as hls.js in a browser) reuses its connections. Had
    // every answer closed, there would be one more connection than requests (the second read
    // of the counters). The client's pool may open a second one when a request starts before
    // the previous answer's connection is back in the pool, so the bound is loose.
    let (connections, requests) = http_counts(&edge).await;
    let watched = hls_player(edge.url("/hls/show/index.m3u8"), "keep-alive-test", 3.0).await;
    assert!(watched.media_ms > 0, "{watched:?}");
    let (connections_after, requests_after) = http_counts(&edge).await;
    let (opened, asked) = (connections_after - connections, requests_after - requests);
    assert!(asked >= 6.0, "{asked} requests");
    assert!(
        opened * 2.0 <= asked,
        "{opened} connections for {asked} requests"
    );
}

/// The edge's HTTP connections and requests so far, read in one request.
async fn http_counts(edge: &EdgeNode) -> (f64, f64) {
    let text = onda_shared::http::get(edge.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in the metrics"))
    };
    (
        value("onda_edge_http_connections_total "),
        value("onda_edge_http_requests_total "),
    )
}

//! The AutoDJ on a standalone edge: real files made by ffmpeg, real listeners, ffprobe.

use onda_tests::edge::{EdgeNode, RawListener, make_track};
use onda_tests::wait_for;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_autodj_plays_the_playlist_in_order_in_real_time_and_skips_broken_files() {
    let media = tempfile::tempdir().expect("dir");
    let a = make_track(media.path(), "a.mp3", 440, 4, "Artist A", "Track A");
    let b = make_track(media.path(), "b.flac", 550, 4, "Artist B", "Track B");
    let c = make_track(media.path(), "c.m4a", 660, 4, "Artist C", "Track C");
    let bad = media.path().join("not-audio.mp3");
    std::fs::write(&bad, "this is a text file, not audio\n".repeat(100)).expect("write");
    let missing = media.path().join("missing.mp3");
    let track = |p: &std::path::Path, artist: &str, title: &str| {
        format!(
            "[[autodj.tracks]]\nfile = \"{}\"\nartist = \"{artist}\"\ntitle = \"{title}\"\n",
            p.display()
        )
    };
    let cache = media.path().join("cache");
    let config = format!(
        "[media]\ncache_dir = \"{}\"\n\n\
         [[mounts]]\npath = \"/radio.mp3\"\n\n[[mounts]]\npath = \"/radio.aac\"\n\n\
         [[autodj]]\nname = \"Test FM\"\norder = \"sequential\"\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}, \
         {{ mount = \"/radio.aac\", format = \"aac\", bitrate_kbps = 64 }}]\n\n{}{}{}{}{}",
        cache.display(),
        track(&a, "Artist A", "Track A"),
        track(&bad, "Broken", "Not Audio"),
        track(&b, "Artist B", "Track B"),
        track(&missing, "Gone", "Missing"),
        track(&c, "Artist C", "Track C"),
    );
    let edge = EdgeNode::start(&config).await;
    edge.wait_source("/radio.mp3").await;
    let listener = RawListener::connect(&edge.addr, "/radio.mp3", true).await;

    // Real time: in steady state the 128 kbps mount delivers 16 000 bytes a second.
    listener.wait_more_audio(64 * 1024).await;
    let (t0, b0) = (Instant::now(), listener.heard().audio_bytes);
    wait_for("8 s of listening", Duration::from_secs(20), || async {
        (t0.elapsed() >= Duration::from_secs(8)).then_some(())
    })
    .await;
    let (secs, bytes) = (
        t0.elapsed().as_secs_f64(),
        listener.heard().audio_bytes - b0,
    );
    let rate = bytes as f64 / secs;
    eprintln!("AUTODJ RATE: {bytes} bytes in {secs:.2} s = {rate:.0} B/s (128 kbps = 16000 B/s)");
    assert!((14_400.0..=17_600.0).contains(&rate), "{rate} B/s");

    // The titles a real ICY client reads follow the playlist; broken and missing files are
    // skipped, and the playlist starts over.
    listener.wait_title("Artist A - Track A").await;
    wait_for("a second round", Duration::from_secs(40), || {
        let titles = listener.heard().titles;
        async move {
            let mut seq: Vec<&str> = titles.iter().map(String::as_str).collect();
            seq.dedup();
            seq.windows(4)
                .any(|w| {
                    w == [
                        "Artist A - Track A",
                        "Artist B - Track B",
                        "Artist C - Track C",
                        "Artist A - Track A",
                    ]
                })
                .then_some(())
        }
    })
    .await;
    let h = listener.heard();
    assert!(!h.closed, "the listener stayed connected across tracks");
    assert!(
        !h.titles
            .iter()
            .any(|t| t.contains("Broken") || t.contains("Gone")),
        "{:?}",
        h.titles
    );
    let logs = edge.proc.stderr();
    assert!(
        logs.contains("skipping track") && logs.contains("not-audio.mp3"),
        "{logs}"
    );
    assert!(logs.contains("missing.mp3"), "{logs}");

    // Each mount carries its own format; renditions were made once per (file, format, bitrate).
    assert_eq!(edge.probe_codec("/radio.mp3").await, "mp3");
    assert_eq!(edge.probe_codec("/radio.aac").await, "aac");
    let cached = std::fs::read_dir(&cache).expect("cache").count();
    assert_eq!(cached, 6, "3 playable files × 2 outputs");
}

//! The AutoDJ on a standalone edge: real files made by ffmpeg, real listeners, ffprobe.

use onda_tests::edge::{EdgeNode, RawListener, START, make_track};
use onda_tests::process::Proc;
use onda_tests::wait_for;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_autodj_plays_the_playlist_in_order_in_real_time_and_skips_broken_files() {
    let media = tempfile::tempdir().expect("dir");
    let a = make_track(media.path(), "a.mp3", 440, 4, "Artist A", "Track A").await;
    let b = make_track(media.path(), "b.flac", 550, 4, "Artist B", "Track B").await;
    let c = make_track(media.path(), "c.m4a", 660, 4, "Artist C", "Track C").await;
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
         [[mounts]]\npath = \"/radio.opus\"\n\n\
         [[autodj]]\nname = \"Test FM\"\norder = \"sequential\"\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}, \
         {{ mount = \"/radio.aac\", format = \"aac\", bitrate_kbps = 64 }}, \
         {{ mount = \"/radio.opus\", format = \"opus\", bitrate_kbps = 96 }}]\n\n{}{}{}{}{}",
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
    assert_eq!(edge.probe_codec("/radio.opus").await, "opus");
    // The Opus mount is paced by its pages' granule positions: in real time, its bytes arrive at
    // the renditions' own rate (Opus is variable bitrate: the three 4 s renditions' size over
    // their 12 s).
    let opus = RawListener::connect(&edge.addr, "/radio.opus", false).await;
    opus.wait_more_audio(24 * 1024).await;
    let (t0, b0) = (Instant::now(), opus.heard().audio_bytes);
    wait_for("8 s of Opus", Duration::from_secs(20), || async {
        (t0.elapsed() >= Duration::from_secs(8)).then_some(())
    })
    .await;
    let rate = (opus.heard().audio_bytes - b0) as f64 / t0.elapsed().as_secs_f64();
    let rendered: u64 = std::fs::read_dir(&cache)
        .expect("cache")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("-opus-"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let expected = rendered as f64 / 12.0;
    eprintln!("AUTODJ OPUS RATE: {rate:.0} B/s (the renditions: {expected:.0} B/s)");
    assert!(
        (0.85..=1.15).contains(&(rate / expected)),
        "{rate} B/s against {expected} B/s"
    );
    let cached = std::fs::read_dir(&cache).expect("cache").count();
    assert_eq!(cached, 9, "3 playable files × 3 outputs");
}

#[tokio::test]
async fn a_live_dj_takes_over_and_the_autodj_resumes_without_dropping_listeners() {
    let media = tempfile::tempdir().expect("dir");
    let a = make_track(media.path(), "a.mp3", 440, 30, "Artist A", "Track A").await;
    let b = make_track(media.path(), "b.mp3", 550, 30, "Artist B", "Track B").await;
    let config = format!(
        "[media]\ncache_dir = \"{}\"\n\n\
         [[mounts]]\npath = \"/radio.mp3\"\n\n[[mounts]]\npath = \"/radio.aac\"\n\n\
         [[mounts]]\npath = \"/live\"\nsource_password = \"dj-secret\"\n\
         source_users = [{{ user = \"nova\", password_hash = \"{}\" }}, \
         {{ user = \"orion\", password_hash = \"{}\" }}]\n\n\
         [[autodj]]\nname = \"Live FM\"\nlive_mount = \"/live\"\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}, \
         {{ mount = \"/radio.aac\", format = \"aac\", bitrate_kbps = 64 }}]\n\n\
         [[autodj.tracks]]\nfile = \"{}\"\nartist = \"Artist A\"\ntitle = \"Track A\"\n\n\
         [[autodj.tracks]]\nfile = \"{}\"\nartist = \"Artist B\"\ntitle = \"Track B\"\n",
        media.path().join("cache").display(),
        onda_control_plane::secrets::hash_password("friday-night").expect("hash"),
        onda_control_plane::secrets::hash_password("saturday-set").expect("hash"),
        a.display(),
        b.display(),
    );
    let edge = EdgeNode::start(&config).await;
    edge.wait_source("/radio.mp3").await;
    let mp3 = RawListener::connect(&edge.addr, "/radio.mp3", true).await;
    let aac = RawListener::connect(&edge.addr, "/radio.aac", true).await;
    mp3.wait_title("Artist A - Track A").await;

    // Wrong DJ credentials are refused.
    let client = onda_shared::http::client();
    let wrong = client
        .put(edge.url("/live"))
        .basic_auth("source", Some("not-it"))
        .header("content-type", "audio/mpeg")
        .body(vec![0u8; 512])
        .send()
        .await
        .expect("put");
    assert_eq!(wrong.status().as_u16(), 401);
    let wrong = client
        .put(edge.url("/live"))
        .basic_auth("nova", Some("saturday-night"))
        .header("content-type", "audio/mpeg")
        .body(vec![0u8; 512])
        .send()
        .await
        .expect("put");
    assert_eq!(wrong.status().as_u16(), 401, "a DJ with the wrong password");

    // The DJ (ffmpeg as an Icecast source client) comes on: both mounts carry the show, with the
    // DJ's title, and nobody is disconnected.
    // The DJ's own account (an Argon2 hash on the edge), not the station's source password.
    let dj = onda_tests::edge::ffmpeg_source(
        &format!("icecast://nova:friday-night@{}/live", edge.addr),
        1000,
        &[],
    );
    edge.wait_source("/live").await;
    let (s, _) = edge
        .admin_get("/admin/metadata?mount=/live&mode=updinfo&song=DJ%20Nova%20-%20Friday%20Set")
        .await;
    assert_eq!(s, 200);
    mp3.wait_title("DJ Nova - Friday Set").await;
    aac.wait_title("DJ Nova - Friday Set").await;
    mp3.wait_more_audio(32 * 1024).await;
    aac.wait_more_audio(16 * 1024).await;
    // The AAC mount carries the MP3 show converted.
    assert_eq!(edge.probe_codec("/radio.aac").await, "aac");
    assert!(
        edge.source_status("/live").await.is_some(),
        "the DJ is still on"
    );

    // A second DJ while one is live is refused with a clear status: another DJ account, and
    // the station's own source password.
    for (user, password) in [("orion", "saturday-set"), ("source", "dj-secret")] {
        let second = client
            .put(edge.url("/live"))
            .basic_auth(user, Some(password))
            .header("content-type", "audio/mpeg")
            .body(vec![0u8; 512])
            .send()
            .await
            .expect("put");
        assert_eq!(second.status().as_u16(), 403, "{user}");
        assert!(
            second.text().await.unwrap_or_default().contains("in use"),
            "{user}"
        );
    }

    // The DJ leaves: the AutoDJ is back on the mounts within a second.
    let left = Instant::now();
    drop(dj);
    let back = wait_for(
        "the AutoDJ back on /radio.mp3",
        Duration::from_secs(10),
        || async {
            let title = edge.source_status("/radio.mp3").await?["title"]
                .as_str()?
                .to_string();
            title.starts_with("Artist").then(|| left.elapsed())
        },
    )
    .await;
    eprintln!("AUTODJ RESUME: {} ms after the DJ left", back.as_millis());
    assert!(back < Duration::from_secs(1), "resumed after {back:?}");
    mp3.wait_more_audio(32 * 1024).await;
    aac.wait_more_audio(16 * 1024).await;
    assert!(!mp3.heard().closed && !aac.heard().closed);
    assert_eq!(edge.probe_codec("/radio.aac").await, "aac");
}

#[tokio::test]
async fn a_jingle_plays_after_every_second_song_as_a_real_listener_hears_it() {
    let media = tempfile::tempdir().expect("dir");
    let a = make_track(media.path(), "a.mp3", 440, 4, "Artist A", "Song A").await;
    let b = make_track(media.path(), "b.mp3", 550, 4, "Artist B", "Song B").await;
    let c = make_track(media.path(), "c.mp3", 660, 4, "Artist C", "Song C").await;
    let j = make_track(media.path(), "j.mp3", 880, 3, "Test FM", "Jingle").await;
    let config = format!(
        "[media]\ncache_dir = \"{}\"\n\n[[mounts]]\npath = \"/radio.mp3\"\n\n\
         [[autodj]]\nname = \"Test FM\"\ntimezone = \"Europe/Berlin\"\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}]\n\n\
         [[autodj.playlists]]\nname = \"music\"\norder = \"sequential\"\ntracks = [\
         {{ file = \"{}\", artist = \"Artist A\", title = \"Song A\" }}, \
         {{ file = \"{}\", artist = \"Artist B\", title = \"Song B\" }}, \
         {{ file = \"{}\", artist = \"Artist C\", title = \"Song C\" }}]\n\n\
         [[autodj.playlists]]\nname = \"jingles\"\nkind = \"interval\"\nevery_songs = 2\n\
         tracks = [{{ file = \"{}\", artist = \"Test FM\", title = \"Jingle\" }}]\n",
        media.path().join("cache").display(),
        a.display(),
        b.display(),
        c.display(),
        j.display(),
    );
    let edge = EdgeNode::start(&config).await;
    edge.wait_source("/radio.mp3").await;
    let listener = RawListener::connect(&edge.addr, "/radio.mp3", true).await;

    // Songs in their order, with the jingle after every second one: A B J C A J B C J …
    let cycle = [
        "Artist A - Song A",
        "Artist B - Song B",
        "Test FM - Jingle",
        "Artist C - Song C",
        "Artist A - Song A",
        "Test FM - Jingle",
        "Artist B - Song B",
        "Artist C - Song C",
        "Test FM - Jingle",
    ];
    let heard = wait_for("seven track changes", Duration::from_secs(90), || {
        let mut titles = listener.heard().titles;
        titles.dedup();
        async move { (titles.len() >= 7).then_some(titles) }
    })
    .await;
    let pattern: String = heard
        .iter()
        .map(|t| if t.contains("Jingle") { 'J' } else { 'S' })
        .collect();
    assert!(pattern.contains("SSJSSJ"), "{heard:?}");
    let expected: Vec<&str> = cycle
        .iter()
        .cycle()
        .take(cycle.len() * 3)
        .copied()
        .collect();
    assert!(
        (0..cycle.len()).any(|k| expected[k..k + heard.len()] == heard[..]),
        "{heard:?}"
    );
    assert!(!listener.heard().closed, "the listener stayed connected");
}

#[tokio::test]
async fn playlist_config_errors_stop_onda_edge_with_a_clear_message() {
    for (autodj, expected) in [
        (
            "timezone = \"Mars/Olympus_Mons\"\n[[autodj.tracks]]\nfile = \"a.mp3\"\n",
            "autodj \"Test FM\": timezone = \"Mars/Olympus_Mons\" is not a known IANA time zone",
        ),
        (
            "[[autodj.playlists]]\nname = \"jingles\"\nkind = \"interval\"\nevery_songs = 2\n\
             tracks = [{ file = \"j.mp3\" }]\n",
            "autodj \"Test FM\": no rotation track",
        ),
        (
            "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
             [[autodj.playlists]]\nname = \"night\"\nkind = \"scheduled\"\nstart = \"22:00\"\n\
             end = \"25:00\"\ntracks = [{ file = \"n.mp3\" }]\n",
            "\"25:00\" is not a time of day \"HH:MM\" (00:00 to 23:59)\nin `autodj.playlists.end`",
        ),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("edge.toml"),
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n\n[[mounts]]\npath = \"/radio.mp3\"\n\n\
                 [[autodj]]\nname = \"Test FM\"\n\
                 outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}]\n\
                 {autodj}"
            ),
        )
        .expect("write config");
        let mut p = Proc::start_in("onda edge", dir, &["edge", "--config", "edge.toml"], &[]);
        assert!(!p.wait_exit(START).await.success(), "{}", p.stderr());
        let stderr = p.stderr();
        assert!(stderr.contains(expected), "{stderr}\n  wanted: {expected}");
        assert!(!stderr.contains("edge listening"), "{stderr}");
    }
}

#[tokio::test]
async fn crossfade_overlaps_tracks_on_a_continuous_stream() {
    let media = tempfile::tempdir().expect("dir");
    let a = make_track(media.path(), "a.mp3", 440, 4, "Artist A", "Fade A").await;
    let b = make_track(media.path(), "b.flac", 550, 4, "Artist B", "Fade B").await;
    let c = make_track(media.path(), "c.m4a", 660, 4, "Artist C", "Fade C").await;
    let track = |p: &std::path::Path, artist: &str, title: &str| {
        format!(
            "[[autodj.tracks]]\nfile = \"{}\"\nartist = \"{artist}\"\ntitle = \"{title}\"\n",
            p.display()
        )
    };
    let config = format!(
        "[media]\ncache_dir = \"{}\"\n\n\
         [[mounts]]\npath = \"/radio.mp3\"\n\n[[mounts]]\npath = \"/radio.aac\"\n\n\
         [[autodj]]\nname = \"Fade FM\"\norder = \"sequential\"\ncrossfade_ms = 2000\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}, \
         {{ mount = \"/radio.aac\", format = \"aac\", bitrate_kbps = 64 }}]\n\n{}{}{}",
        media.path().join("cache").display(),
        track(&a, "Artist A", "Fade A"),
        track(&b, "Artist B", "Fade B"),
        track(&c, "Artist C", "Fade C"),
    );
    let edge = EdgeNode::start(&config).await;
    edge.wait_source("/radio.mp3").await;
    let listener = RawListener::connect(&edge.addr, "/radio.mp3", true).await;
    // When each new title arrived.
    let mut seen: Vec<(String, Instant)> = Vec::new();
    let cycle = wait_for(
        "two cycles of the playlist",
        Duration::from_secs(60),
        || {
            let titles = listener.heard().titles;
            let now = Instant::now();
            let mut seq: Vec<String> = titles;
            seq.dedup();
            for t in seq.into_iter().skip(seen.len()) {
                seen.push((t, now));
            }
            // The first title arrives with the connection, not when its track started: timing
            // starts at a change the listener saw happen.
            let names: Vec<&str> = seen.iter().skip(1).map(|(t, _)| t.as_str()).collect();
            let found = names.windows(7).position(|w| {
                w == [
                    "Artist A - Fade A",
                    "Artist B - Fade B",
                    "Artist C - Fade C",
                    "Artist A - Fade A",
                    "Artist B - Fade B",
                    "Artist C - Fade C",
                    "Artist A - Fade A",
                ]
            });
            let span = found.map(|i| seen[i + 7].1 - seen[i + 1].1);
            async move { span }
        },
    )
    .await;
    // Three 4 s tracks overlapping by 2 s repeat every 6 s (12 s without the crossfade).
    eprintln!("CROSSFADE: two cycles took {:.1} s", cycle.as_secs_f64());
    assert!(
        (Duration::from_secs(9)..=Duration::from_secs(16)).contains(&cycle),
        "two cycles took {cycle:?}"
    );
    assert!(!listener.heard().closed, "one continuous stream");
    assert_eq!(edge.probe_codec("/radio.mp3").await, "mp3");
    assert_eq!(edge.probe_codec("/radio.aac").await, "aac");
    // Crossfading decodes the originals: no renditions were made.
    let cached = std::fs::read_dir(media.path().join("cache")).map_or(0, |d| d.count());
    assert_eq!(cached, 0);
}

/// The longest silence (≥ 2 ms below -40 dB) ffmpeg finds in `file`, ignoring its first 0.5 s.
fn longest_silence(file: &std::path::Path) -> Duration {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(file)
        .args([
            "-af",
            "silencedetect=noise=-40dB:d=0.002",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("run ffmpeg");
    let log = String::from_utf8_lossy(&out.stderr);
    let mut longest = Duration::ZERO;
    let mut start = 0.0f64;
    for line in log.lines() {
        if let Some(v) = line.split("silence_start: ").nth(1) {
            start = v.trim().parse().unwrap_or(0.0);
        }
        if let Some(v) = line.split("silence_duration: ").nth(1)
            && start > 0.5
        {
            let d = Duration::from_secs_f64(v.trim().parse().unwrap_or(0.0));
            longest = longest.max(d);
        }
    }
    longest
}

/// Gapless within a format: renditions are cut to whole frames and lose their priming and flush
/// frames, so joined frames play with no silence between tracks.
#[tokio::test]
async fn track_changes_are_gapless() {
    let media = tempfile::tempdir().expect("dir");
    let mut tracks = String::new();
    for (i, freq) in [440, 550, 660, 770].into_iter().enumerate() {
        let p = make_track(
            media.path(),
            &format!("t{i}.mp3"),
            freq,
            2,
            "Gapless",
            &format!("T{i}"),
        )
        .await;
        tracks.push_str(&format!("[[autodj.tracks]]\nfile = \"{}\"\n", p.display()));
    }
    let config = format!(
        "[media]\ncache_dir = \"{}\"\n\n[[mounts]]\npath = \"/radio.mp3\"\n\n[[mounts]]\npath = \"/radio.aac\"\n\n\
         [[mounts]]\npath = \"/radio.opus\"\n\n\
         [[autodj]]\nname = \"Gapless FM\"\norder = \"sequential\"\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}, \
         {{ mount = \"/radio.aac\", format = \"aac\", bitrate_kbps = 96 }}, \
         {{ mount = \"/radio.opus\", format = \"opus\", bitrate_kbps = 96 }}]\n\n{tracks}",
        media.path().join("cache").display(),
    );
    let edge = EdgeNode::start(&config).await;
    edge.wait_source("/radio.mp3").await;
    // ffmpeg as a listener records 7 s (three track changes) of each mount.
    // Opus: renditions end on whole packets, but the next track's 312 samples (6.5 ms) of
    // encoder lookahead are played (one logical Ogg stream skips only its first track's), of
    // which about 4 ms fall below the silence threshold.
    for (mount, limit_ms) in [("/radio.mp3", 5), ("/radio.aac", 5), ("/radio.opus", 7)] {
        let out = media
            .path()
            .join(format!("rec{}.wav", mount.replace('/', "-")));
        let status = tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(edge.url(mount))
            .args(["-t", "7"])
            .arg(&out)
            .kill_on_drop(true)
            .status();
        let status = tokio::time::timeout(Duration::from_secs(30), status)
            .await
            .expect("recorded within 30 s")
            .expect("run ffmpeg");
        assert!(status.success());
        let gap = longest_silence(&out);
        eprintln!(
            "GAP {mount}: longest silence at a track change {} ms",
            gap.as_millis()
        );
        assert!(gap < Duration::from_millis(limit_ms), "{mount}: {gap:?}");
    }
}

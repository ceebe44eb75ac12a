//! Live DJs title their own shows: real DJ encoders (ezstream through libshout, Liquidsoap's
//! `output.icecast`) stream to an AutoDJ station's live mount with the DJ's own account and send
//! their titles to `/admin/metadata` with the same credentials, as they do with Icecast. The
//! station's listeners and status-json show them; another station's mount refuses them.

use onda_tests::edge::{EdgeNode, RawListener, ffmpeg_source, make_track};
use onda_tests::process::Proc;
use onda_tests::wait_for;
use std::time::Duration;

/// An ICY listener's title and status-json's for the station's mount and the live mount.
async fn wait_everywhere(edge: &EdgeNode, listener: &RawListener, title: &str) {
    listener.wait_title(title).await;
    for mount in ["/live", "/radio.mp3"] {
        wait_for(
            &format!("{title:?} in status-json for {mount}"),
            Duration::from_secs(10),
            || async {
                let s = edge.source_status(mount).await?;
                (s["title"] == title).then_some(())
            },
        )
        .await;
    }
}

/// `GET /admin/metadata` with the given Basic credentials: the status.
async fn set_title(edge: &EdgeNode, mount: &str, user: &str, password: &str, song: &str) -> u16 {
    let song = song.replace(' ', "%20");
    onda_shared::http::client()
        .get(edge.url(&format!(
            "/admin/metadata?mount={mount}&mode=updinfo&song={song}"
        )))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("metadata request")
        .status()
        .as_u16()
}

fn ezstream(dir: &std::path::Path, edge: &EdgeNode, track: &std::path::Path) -> Proc {
    let port = edge.addr.rsplit(':').next().expect("port");
    let config = dir.join("ezstream.xml");
    std::fs::write(
        &config,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ezstream>\n\
             <servers><server><hostname>127.0.0.1</hostname><port>{port}</port>\
             <user>nova</user><password>friday-night</password></server></servers>\n\
             <streams><stream><mountpoint>/live</mountpoint><format>MP3</format></stream></streams>\n\
             <intakes><intake><type>file</type><filename>{}</filename></intake></intakes>\n\
             </ezstream>\n",
            track.display()
        ),
    )
    .expect("write ezstream.xml");
    // ezstream refuses a configuration with a password that others can read.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    Proc::external(
        "ezstream DJ",
        "ezstream",
        &["-v", "-c", &config.display().to_string()],
    )
}

fn liquidsoap(dir: &std::path::Path, edge: &EdgeNode, track: &std::path::Path) -> Proc {
    let port = edge.addr.rsplit(':').next().expect("port");
    let script = dir.join("dj.liq");
    std::fs::write(
        &script,
        format!(
            "settings.init.allow_root.set(true)\nsettings.log.stdout.set(true)\n\
             output.icecast(%mp3(bitrate=128), host=\"127.0.0.1\", port={port}, \
             user=\"nova\", password=\"friday-night\", mount=\"/live\", \
             mksafe(single({:?})))\n",
            track.display().to_string()
        ),
    )
    .expect("write dj.liq");
    Proc::external(
        "liquidsoap DJ",
        "liquidsoap",
        &[&script.display().to_string()],
    )
}

/// An AutoDJ station whose DJ "nova" comes on with ezstream, then with Liquidsoap: each time the
/// encoder's own title updates (the DJ's credentials) reach the station's ICY listener and
/// status-json. Another station's live mount, where a DJ of that station also named "nova" is
/// on the air, refuses this nova's credentials (401) and keeps its title. Before the fix the
/// updates were refused and the listeners kept the AutoDJ's title.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_djs_title_their_shows_with_ezstream_and_liquidsoap_but_not_another_station() {
    let media = tempfile::tempdir().expect("dir");
    let a = make_track(media.path(), "a.mp3", 440, 30, "Artist A", "Track A").await;
    let ez = make_track(media.path(), "ez.mp3", 550, 4, "DJ Nova", "Friday Set").await;
    let liq = make_track(media.path(), "liq.mp3", 660, 4, "DJ Nova", "Second Hour").await;
    let hash = |pw: &str| onda_control_plane::secrets::hash_password(pw).expect("hash");
    let config = format!(
        "[media]\ncache_dir = \"{}\"\n\n\
         [[mounts]]\npath = \"/radio.mp3\"\n\n\
         [[mounts]]\npath = \"/live\"\nsource_password = \"station-secret\"\n\
         source_users = [{{ user = \"nova\", password_hash = \"{}\" }}]\n\n\
         [[mounts]]\npath = \"/other-live\"\nsource_password = \"other-secret\"\n\
         source_users = [{{ user = \"nova\", password_hash = \"{}\" }}]\n\n\
         [[autodj]]\nname = \"Live FM\"\nlive_mount = \"/live\"\n\
         outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}]\n\n\
         [[autodj.tracks]]\nfile = \"{}\"\nartist = \"Artist A\"\ntitle = \"Track A\"\n",
        media.path().join("cache").display(),
        hash("friday-night"),
        hash("other-station-nova"),
        a.display(),
    );
    let edge = EdgeNode::start(&config).await;
    edge.wait_source("/radio.mp3").await;
    let listener = RawListener::connect(&edge.addr, "/radio.mp3", true).await;
    listener.wait_title("Artist A - Track A").await;

    // The other station's DJ nova is on the air on its own live mount.
    let other = ffmpeg_source(
        &format!("icecast://nova:other-station-nova@{}/other-live", edge.addr),
        880,
        &[],
    );
    edge.wait_source("/other-live").await;

    // ezstream (libshout) as DJ nova: its title update is accepted.
    let ez_dir = tempfile::tempdir().expect("dir");
    let ezstream = ezstream(ez_dir.path(), &edge, &ez);
    wait_everywhere(&edge, &listener, "DJ Nova - Friday Set").await;
    assert_eq!(
        set_title(
            &edge,
            "/other-live",
            "nova",
            "other-station-nova",
            "Other Show"
        )
        .await,
        200
    );

    // This station's nova cannot title the other station's mount, though a DJ of the same name
    // is on the air there; nor a mount where nova is no DJ.
    for mount in ["/other-live", "/radio.mp3"] {
        assert_eq!(
            set_title(&edge, mount, "nova", "friday-night", "Hijacked").await,
            401,
            "{mount}"
        );
    }
    let s = edge.source_status("/other-live").await.expect("other");
    assert_eq!(s["title"], "Other Show", "{s}");
    // Nor can a wrong password title the show on the air.
    assert_eq!(
        set_title(&edge, "/live", "nova", "friday-nights", "Wrong").await,
        401
    );
    drop(ezstream);
    wait_for("the ezstream DJ gone", Duration::from_secs(15), || async {
        edge.source_status("/live").await.is_none().then_some(())
    })
    .await;

    // Liquidsoap as the same DJ: its metadata updates are accepted as well.
    let liq_dir = tempfile::tempdir().expect("dir");
    let _liquidsoap = liquidsoap(liq_dir.path(), &edge, &liq);
    wait_everywhere(&edge, &listener, "DJ Nova - Second Hour").await;
    drop(other);
}

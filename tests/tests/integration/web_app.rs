//! The web app (`web/`, served at `/app/`) in a real browser: Debian's chromium driven by
//! playwright-core (tests/browser/app.mjs). A fan and a creator, each in a browser context of
//! their own, sign in by link and chat: the typing indicator comes and goes, a message arrives,
//! the read mark shows, the fan attaches an image that both pages show loaded, the unread badge
//! appears and clears, the notification bell counts, and a message sent while the creator's tab
//! had lost its connection shows once it reconnects.
//! Screenshots of each page are kept in the node process's directory (its path is printed).

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::process::Proc;
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_and_a_creator_chat_in_the_browser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/install-deps.sh test"
    );
    assert!(
        onda_tests::web_app_dir().join("index.html").is_file(),
        "the web app is not built: run scripts/build-web.sh (make test does)"
    );
    let cp = TestControlPlane::start(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    // The app and its assets: the page revalidated, the hashed assets cached for good.
    let page = cp.call(Method::GET, "/app/", None, None).await.expect(200);
    assert!(page.text.contains("<script"), "{}", page.text);
    let app = onda_shared::http::get(format!("{}/app/", cp.url))
        .await
        .expect("app");
    assert_eq!(app.headers()["cache-control"], "no-cache");
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;

    let pictures = tempfile::tempdir().expect("temp dir");
    let photo = onda_tests::media::make_png(pictures.path(), "photo", 120, 80).await;

    let app_url = format!("{}/app/", cp.url);
    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[
            &dir.join("app.mjs").display().to_string(),
            &app_url,
            &fan,
            &creator,
            ".",
            &photo.display().to_string(),
        ],
    );
    let exit = node.wait_exit(Duration::from_secs(120)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browser ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshots in {})", node.path().display());
    let steps = &out["steps"];
    assert_eq!(steps["signed_in"]["fan"], "Fan One", "{report}");
    assert_eq!(steps["signed_in"]["creator"], "Cleo", "{report}");
    assert_eq!(
        steps["signed_in"]["address_has_token"], false,
        "the sign-in link's token leaves the address bar: {report}"
    );
    assert_eq!(steps["open"], true, "{report}");
    assert_eq!(steps["typing_shows"], "fan-1 is typing…", "{report}");
    assert_eq!(steps["message_arrives"], "Hi Cleo 🎧", "{report}");
    assert_eq!(steps["typing_goes"], true, "{report}");
    assert_eq!(steps["read_mark"], "Seen", "{report}");
    // The attached picture, uploaded and sent: loaded in both pages at its own width.
    assert_eq!(steps["image_attached"]["creator"], 120, "{report}");
    assert_eq!(steps["image_attached"]["fan"], 120, "{report}");
    assert_eq!(steps["unread_badge"], "1", "{report}");
    assert_eq!(steps["badge_clears"], true, "{report}");
    // The creator's reply made one notification for the fan: the bell counts it, opening the
    // panel lists it and marks it read.
    assert_eq!(steps["bell"]["before"], "1", "{report}");
    assert_eq!(steps["bell"]["items"], 1, "{report}");
    // The creator's tab lost its connection while the fan wrote: when socket.io-client
    // reconnected, the message was replayed into the open conversation, once.
    let replay = &steps["reconnect_replays"];
    assert_eq!(replay["text"], "While you were away 📡", "{report}");
    assert_eq!(replay["shown"], 1, "{report}");
    assert_eq!(replay["recovered"], 1, "{report}");
    let errors: Vec<&Value> = out["console"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.as_str().is_some_and(|l| l.contains("pageerror")))
        .collect();
    assert!(errors.is_empty(), "{report}");
    eprintln!("web app: {out}\n(screenshots in {})", node.path().display());
    cp.stop().await;
}

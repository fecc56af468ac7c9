//! The operator page in a real browser: Debian's chromium, driven by Playwright
//! (`tests/js/operator.mjs`). It loads with no console errors, shows a workflow submitted
//! over REST reach SUCCESS, cancels one with its button, and leaves a screenshot in
//! `target/test-artifacts/operator.png`.

use crate::{common, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_shows_workflows_live_in_chromium() {
    let server = common::Server::with_config("[ws]\nmetrics_interval_ms = 250\n");
    let screenshot = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts/operator.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = server.http.clone();
    let shot = screenshot.display().to_string();
    tokio::task::spawn_blocking(move || {
        node("operator.mjs", &["--url", &url, "--screenshot", &shot])
    })
    .await
    .unwrap();
    assert!(
        screenshot.is_file(),
        "the screenshot is kept as an artifact"
    );

    // The page itself: compiled in, no outside resources.
    let page = common::http().get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/ws/orchestration"));
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "nothing from the internet"
    );
}

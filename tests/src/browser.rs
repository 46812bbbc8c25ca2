//! A real browser for the web console's tests: Debian's headless Chromium, driven over
//! WebDriver by its ChromeDriver (`make test-services` installs both), through the fantoccini
//! client.
//!
//! ChromeDriver and the browsers it starts run in a process group of their own, which is
//! killed when the [`Browser`] is dropped, so a failed test leaves no browser behind.
//! Screenshots are kept under `target/test-artifacts/console/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::guests;

/// How long a page has to show what a test waits for: generous, for a busy machine.
pub const PAGE_WAIT: Duration = Duration::from_secs(90);

/// The Chromium binary (`CHROMIUM` overrides).
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into())
}

/// The ChromeDriver binary (`CHROMEDRIVER` overrides).
fn chromedriver() -> PathBuf {
    std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromedriver".into())
}

/// Where the screenshots go.
pub fn artifacts_dir() -> PathBuf {
    guests::workspace_root().join("target/test-artifacts/console")
}

/// A headless Chromium session.
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a session in a new, empty
    /// profile. Panics naming what is missing when Chromium or ChromeDriver is not installed.
    pub async fn start() -> Browser {
        for binary in [chromium(), chromedriver()] {
            assert!(
                binary.exists(),
                "{} is missing: the console's browser tests need Debian's chromium and chromium-driver \
                 (`make test-services` installs them)",
                binary.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = {
            use std::os::unix::process::CommandExt as _;
            Command::new(chromedriver())
                .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                // Runs as root in CI, on a machine with no network but loopback: no sandbox,
                // and none of the background calls to the outside.
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-quic", "--no-first-run", "--window-size=1280,1800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("chromedriver not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver at {url}: {e}"),
            }
        };
        Browser { client, driver, _profile: profile }
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The text of the element `css` selects, or `None` when there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// The attribute `name` of the element `css` selects.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.attr(name).await.ok().flatten()
    }

    /// Clicks the element `css` selects. The page redraws its tables every refresh, so an
    /// element found may be replaced before the click lands: then it is found and clicked again.
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("click {css}: {e}; again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Types `text` into the element `css` selects (a file input takes a path).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Waits until the text of the element `css` selects satisfies `check`, and returns it;
    /// panics after [`PAGE_WAIT`] with a screenshot and the text last seen.
    pub async fn wait_for_text(&self, what: &str, css: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let text = self.text(css).await;
            if let Some(text) = text.as_deref().filter(|t| check(t)) {
                return text.to_string();
            }
            if tokio::time::Instant::now() >= deadline {
                let shot = self.screenshot(&format!("timeout-{}", what.replace(' ', "-"))).await;
                panic!("timed out waiting for {what} in {css}; it shows {text:?}; screenshot {}", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a screenshot of the page as `<name>.png` under [`artifacts_dir`]; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        match self.client.screenshot().await {
            Ok(png) => std::fs::write(&path, png).unwrap(),
            Err(e) => tracing::warn!("no screenshot {name}: {e}"),
        }
        path
    }

    /// Ends the session and the browser.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group holds ChromeDriver and the browsers it started, and nothing else.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

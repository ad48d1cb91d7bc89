//! A small WebDriver client (W3C protocol over HTTP, JSON) driving Debian's headless
//! chromium through chromedriver, for the web console's browser test. chromedriver and
//! chromium must be installed (deploy/local/test.sh installs them): their absence fails the
//! test, it is never skipped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session in it; both end when dropped.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    base: String,
}

/// A WebDriver call that failed, with the driver's error.
#[derive(Debug)]
pub struct Failed(pub String);

impl Browser {
    /// Starts chromedriver on `port` and a headless chromium session of `width`×`height`.
    pub fn start(port: u16, width: u32, height: u32) -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: the console's browser test needs Debian's chromium and \
                 chromium-driver (deploy/local/test.sh installs them: apt-get install chromium chromium-driver)"
            );
        }
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut browser = Browser {
            driver,
            agent,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = browser
                .call("GET", "/status", None)
                .ok()
                .and_then(|v| v["ready"].as_bool())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready in 15 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--lang=de-DE",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let session = browser
            .call("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| panic!("chromium session: {}", e.0));
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failed> {
        let url = format!("{}{path}", self.base);
        let result = tokio::task::block_in_place(|| match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        });
        let mut response = result.map_err(|e| Failed(format!("{method} {path}: {e}")))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Failed(format!("{method} {path}: {e}")))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| Failed(format!("{method} {path}: {e}")))?;
        if status.is_success() {
            Ok(value["value"].clone())
        } else {
            Err(Failed(format!(
                "{method} {path}: {status}: {}",
                value["value"]["message"]
            )))
        }
    }

    pub fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("{}", e.0));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .unwrap_or_else(|e| panic!("{}", e.0))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, if there is one now.
    pub fn find(&self, css: &str) -> Option<String> {
        self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(str::to_owned))
    }

    fn element(&self, css: &str) -> String {
        self.find(css)
            .unwrap_or_else(|| panic!("no element {css:?} on {}", self.url()))
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/clear"), None)
            .unwrap_or_else(|e| panic!("{}", e.0));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|e| panic!("{}", e.0));
    }

    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), None)
            .unwrap_or_else(|e| panic!("{}", e.0));
    }

    /// The rendered text of the element `css` selects, read in one step: parts of the
    /// console's pages are replaced while they refresh, so a handle found first could go
    /// stale before its text is read.
    pub fn text(&self, css: &str) -> String {
        let text = self.run(
            "var e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([css]),
        );
        text.as_str()
            .unwrap_or_else(|| panic!("no element {css:?} on {}", self.url()))
            .trim()
            .to_owned()
    }

    /// The page's HTML as the browser has it now.
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .unwrap_or_else(|e| panic!("{}", e.0))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("{}", e.0))
    }

    /// The value of the browser's cookie `name` for the current page (HttpOnly ones too,
    /// which page scripts cannot read).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.call("GET", &format!("/cookie/{name}"), None)
            .ok()
            .and_then(|c| c["value"].as_str().map(str::to_owned))
    }

    /// Runs an asynchronous `script`, which calls `arguments[arguments.length - 1]` with
    /// its result.
    pub fn run_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("{}", e.0))
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self
            .call("GET", "/screenshot", None)
            .unwrap_or_else(|e| panic!("{}", e.0));
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"))
    }

    /// Waits until `check` returns `Some`, at most `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what} on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

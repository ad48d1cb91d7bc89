//! The web console end to end: the real gateway in-process (console and admin API on
//! 127.0.0.1:0) against the real RabbitMQ, driven in Debian's headless chromium through
//! chromedriver as an operator would use it. Screenshots of the pages go to
//! target/console-screenshots/, or to docs/console/ (which the README shows) when
//! OZG_SCREENSHOTS=docs is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use common::*;
use ozg_gateway::admin::auth::hash_token;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::wire::v1 as wire;
use webdriver::Browser;

const MELDE: &str = "99115005104000";
const VIEWER: &str = "console-viewer-token-0123456789";
const OPERATOR: &str = "console-operator-token-0123456789";
/// An operator of Thüringen only.
const TH_OPERATOR: &str = "console-th-operator-token-0123456789";
/// Put into every submission's form data and attachment name: no page may ever show it.
const MARKER: &str = "PAYLOAD-MARKER-9c1f";
/// Darmstadt (Kreis 06411), routed to he-a; Kassel (Kreis 06611), routed nowhere.
const DARMSTADT: &str = "064110000000";
const KASSEL: &str = "066110000000";
const WAIT: Duration = Duration::from_secs(20);

fn config(v: &Vhosts) -> ozg_gateway::Config {
    let token = |name: &str, secret: &str, roles: &str| {
        format!(
            "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [{roles}]\n",
            hex::encode(hash_token(secret))
        )
    };
    let admin = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n{}\n{}\n{}laender = [\"TH\"]\n\n[console]\naddress = \"127.0.0.1:0\"\n",
        token("watcher", VIEWER, "\"viewer\""),
        token("ops", OPERATOR, "\"operator\""),
        token("th-ops", TH_OPERATOR, "\"operator\""),
    );
    TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .platform("civento-he", "06", "he", Some(50))
        .destination("he-a", "06", "he", "Bürgeramt Darmstadt")
        .destination("he-b", "06", "he", "Bürgeramt Kassel")
        .route(MELDE, "06411", "he-a")
        .dead_letters_into_store()
        .extra(&admin)
        .build()
}

/// A submission for `region` whose payload carries [`MARKER`].
fn marked(region: &str) -> wire::Submission {
    let mut s = sample_submission("civento-he", "06", MELDE, region, 512);
    if let Some(form) = s.form_data.as_mut() {
        form.content = format!("{{\"name\":\"{MARKER}\"}}").into_bytes();
    }
    for a in &mut s.attachments {
        a.file_name = format!("{MARKER}.pdf");
    }
    s
}

/// Each page that gets a screenshot is checked for accessibility first.
fn save_screenshot(browser: &Browser, name: &str) {
    assert_accessible(browser);
    let dir = match std::env::var("OZG_SCREENSHOTS").as_deref() {
        Ok("docs") => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console"),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, browser.screenshot()).unwrap();
    println!("screenshot: {}", path.display());
}

/// axe-core, run in the browser on each page the tests visit.
const AXE: &str = include_str!("axe/axe.min.js");

/// axe-core's WCAG 2.0/2.1 A and AA findings on the page shown: id, impact, help, nodes.
fn axe_violations(browser: &Browser) -> Vec<serde_json::Value> {
    let loaded = browser.run(
        &format!("{AXE}\nreturn typeof window.axe === 'object';"),
        serde_json::json!([]),
    );
    assert_eq!(loaded, serde_json::json!(true), "axe-core did not load");
    let violations = browser.run_async(
        "var done = arguments[arguments.length - 1];\
         axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})\
           .then(function (r) { done(r.violations.map(function (v) {\
             return {id: v.id, impact: v.impact, help: v.help,\
                     nodes: v.nodes.slice(0, 3).map(function (n) { return n.target.join(' '); })};\
           })); }, function (e) { done([{id: 'axe-failed', impact: 'critical', help: String(e), nodes: []}]); });",
        serde_json::json!([]),
    );
    violations.as_array().cloned().unwrap_or_default()
}

/// Fails on any serious or critical accessibility violation of the page shown; prints
/// every violation found.
fn assert_accessible(browser: &Browser) {
    let violations = axe_violations(browser);
    let url = browser.url();
    for v in &violations {
        println!(
            "axe on {url}: {} ({}): {} {}",
            v["id"], v["impact"], v["help"], v["nodes"]
        );
    }
    let serious: Vec<_> = violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(
        serious.is_empty(),
        "accessibility violations on {url}: {serious:#?}"
    );
    println!(
        "axe on {url}: {} violation(s), none serious",
        violations.len()
    );
}

/// Every page the browser shows is checked for the payload marker.
fn assert_no_payload(browser: &Browser) {
    let html = browser.source();
    assert!(
        !html.contains(MARKER),
        "{} shows payload content",
        browser.url()
    );
}

/// An HTTP client that does not follow redirects, for what a browser would hide.
fn raw() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_and_watches_the_overview_move() {
    let v = Vhosts::create("console", &["gw", "he"]);
    let gw = Admin::start(config(&v)).await;
    let console = format!("http://{}", gw.console.expect("console configured"));

    // Without a session: sent to the login; every answer carries the strict policy.
    let http = raw();
    let answer =
        tokio::task::block_in_place(|| http.get(format!("{console}/overview")).call()).unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/login");
    let csp = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // A forged logout (no session, no CSRF token) is refused.
    let forged = tokio::task::block_in_place(|| {
        http.post(format!("{console}/logout"))
            .send_form([("csrf", "guess")])
    })
    .unwrap();
    assert_eq!(forged.status(), 403);

    let browser = Browser::start(free_port(), 1400, 1100);
    browser.go(&format!("{console}/overview"));
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    let html = browser.source();
    assert!(html.contains("<html lang=\"de\""), "German first");
    assert!(html.contains("Anmelden"));

    // A wrong token is refused and said so.
    browser.type_into("#token", "not-a-token");
    browser.click("#log-in");
    let problem = browser.wait_for("the login's refusal", WAIT, |b| {
        b.find("#login-problem").map(|_| b.text("#login-problem"))
    });
    assert!(problem.contains("Token unbekannt"), "{problem}");
    save_screenshot(&browser, "login");
    // The check can fail: an unlabelled field put into the page is found.
    browser.run(
        "var i = document.createElement('input'); document.getElementById('main').appendChild(i);",
        serde_json::json!([]),
    );
    let found = axe_violations(&browser);
    assert!(
        found.iter().any(|v| v["id"] == "label"),
        "axe-core missed an unlabelled field: {found:?}"
    );

    // Logged in by keyboard: the token typed, Enter pressed.
    browser.go(&format!("{console}/login"));
    browser.type_into("#token", &format!("{OPERATOR}\u{E007}"));
    browser.wait_for("the overview", WAIT, |b| {
        b.url().ends_with("/overview").then_some(())
    });
    assert_eq!(browser.text("#who"), "ops");
    assert_eq!(browser.text("#platform-civento-he .consumed"), "0");
    // The session cookie is not readable by scripts.
    let cookies = browser.run("return document.cookie;", serde_json::json!([]));
    assert!(
        !cookies.as_str().unwrap_or_default().contains("ozg_session"),
        "{cookies}"
    );

    // Submissions arrive; the page shows them without being loaded again.
    browser.run("window.stayed = true;", serde_json::json!([]));
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    const SENT: usize = 20;
    for _ in 0..SENT {
        submit(&channel, &marked(DARMSTADT), Encoding::Protobuf).await;
    }
    let delivered = take_backoffice(&channel, "he-a", SENT, WAIT).await;
    let (consumed, rate) = browser.wait_for("the platform's rate to move", WAIT, |b| {
        let consumed = b.text("#platform-civento-he .consumed");
        let rate: f64 = b
            .text("#platform-civento-he .rate-1")
            .parse()
            .unwrap_or(0.0);
        (consumed == SENT.to_string() && rate > 0.0).then_some((consumed, rate))
    });
    let stayed = browser.run("return window.stayed === true;", serde_json::json!([]));
    assert_eq!(stayed, serde_json::json!(true), "the page was loaded again");
    println!(
        "sent {SENT}, delivered {}, console shows consumed {consumed}, 1-min rate {rate}/s",
        delivered.len()
    );
    assert_eq!(delivered.len(), SENT);
    assert_no_payload(&browser);
    save_screenshot(&browser, "overview");

    // English on request, and back.
    browser.click("button[lang='en']");
    browser.wait_for("the English overview", WAIT, |b| {
        b.source().contains("<html lang=\"en\"").then_some(())
    });
    assert_eq!(browser.text("h1"), "Overview");
    browser.click("button[lang='de']");
    browser.wait_for("the German overview", WAIT, |b| {
        (b.text("h1") == "Übersicht").then_some(())
    });

    // Logging out ends the session: the overview sends to the login again.
    browser.click("header form[action='/logout'] button");
    browser.wait_for("the login", WAIT, |b| {
        b.url().ends_with("/login").then_some(())
    });
    browser.go(&format!("{console}/overview"));
    assert!(browser.url().ends_with("/login"), "{}", browser.url());

    drop(browser);
    let _ = he.close(200, "done".into()).await;
    gw.stop().await;
}

/// Logs in through the form and waits for the overview.
fn login(browser: &Browser, console: &str, token: &str) {
    browser.go(&format!("{console}/login"));
    browser.type_into("#token", token);
    browser.click("#log-in");
    browser.wait_for("the overview after login", WAIT, |b| {
        b.url().ends_with("/overview").then_some(())
    });
}

/// Loads `url` until `css` shows `text`.
fn reload_until(browser: &Browser, url: &str, css: &str, text: &str) {
    browser.wait_for(&format!("{text:?} in {css} of {url}"), WAIT, |b| {
        b.go(url);
        b.find(css)
            .and_then(|_| b.text(css).contains(text).then_some(()))
    });
}

/// A form POST as a forger would send it, with `cookie` (if any); the answer's status.
fn forge(url: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> u16 {
    let http = raw();
    let mut request = http.post(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("ozg_session={cookie}"));
    }
    tokio::task::block_in_place(|| request.send_form(fields.iter().copied()))
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_route_letter_is_replayed_from_the_console_once_its_route_is_added() {
    let v = Vhosts::create("console-replay", &["gw", "he"]);
    let gw = Admin::start(config(&v)).await;
    let console = format!("http://{}", gw.console.expect("console configured"));
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    // Kassel (06611) has no route: only Darmstadt (06411) goes to he-a.
    let lost = marked(KASSEL);
    let sid = lost.submission_id.clone();
    submit(&channel, &lost, Encoding::Protobuf).await;

    let browser = Browser::start(free_port(), 1400, 1100);
    login(&browser, &console, OPERATOR);
    let list = format!("{console}/dead-letters?reason=no-route");
    reload_until(&browser, &list, "#letters", &sid);
    assert_no_payload(&browser);
    let letter = browser
        .run(
            "return Array.from(document.querySelectorAll('#letters tbody tr'))\
               .find(tr => tr.innerText.includes(arguments[0])).id.slice('letter-'.length);",
            serde_json::json!([sid]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(browser.text("#h-groups"), "Anzahl nach Gruppen (1)");
    save_screenshot(&browser, "dead-letters");

    // Its details: reason and headers, never the payload.
    browser.go(&format!("{console}/dead-letters/{letter}"));
    assert_eq!(browser.text("#letter-reason"), "no-route");
    assert_no_payload(&browser);
    save_screenshot(&browser, "dead-letter");

    // The route, added in the console.
    browser.go(&format!("{console}/routing"));
    let version_before = browser.text("#version");
    browser.type_into("#r-service", MELDE);
    browser.type_into("#r-region", "06611");
    browser.run(
        "document.getElementById('r-destination').value = arguments[0];",
        serde_json::json!(["he-b"]),
    );
    browser.click("#save-route");
    browser.wait_for("the route saved", WAIT, |b| b.find("#notice").map(|_| ()));
    assert_ne!(browser.text("#version"), version_before);
    let routes = browser.text("#routes");
    assert!(
        routes.contains("066110000000") || routes.contains("06611"),
        "{routes}"
    );

    // Replayed from the console: selected, confirmed with its count, followed.
    browser.go(&list);
    browser.click(&format!("#select-{letter}"));
    browser.click("#replay-selected");
    browser.wait_for("the confirmation", WAIT, |b| b.find("#count").map(|_| ()));
    assert_eq!(browser.text("#count"), "1");
    save_screenshot(&browser, "confirm");
    browser.click("#confirm");
    let fate = browser.wait_for("the replay's outcome", WAIT, |b| {
        let css = format!("#outcome-{letter} .fate");
        b.find(&css)
            .map(|_| b.text(&css))
            .filter(|fate| fate.contains("zugestellt an he-b"))
    });
    save_screenshot(&browser, "outcomes");
    let arrived = take_backoffice(&channel, "he-b", 1, WAIT).await;
    assert_eq!(
        arrived.len(),
        1,
        "the replayed submission at he-b's back office"
    );
    assert_eq!(
        arrived[0].body,
        ozg_gateway::sample::encode(&lost, Encoding::Protobuf),
        "delivered unchanged"
    );

    // The trace says it was replayed.
    reload_until(
        &browser,
        &format!("{console}/trace?id={sid}"),
        "#timeline",
        "replayed",
    );
    assert_no_payload(&browser);
    save_screenshot(&browser, "trace");

    // Forged changes are refused: no session, the operator's session without its CSRF token.
    let cookie = browser.cookie("ozg_session").expect("session cookie");
    let apply = format!("{console}/dead-letters/apply");
    let replay = |csrf: &'static str| [("csrf", csrf), ("action", "replay-all"), ("expected", "1")];
    assert_eq!(forge(&apply, None, &replay("x")), 403);
    assert_eq!(forge(&apply, Some(&cookie), &replay("")), 403);
    assert_eq!(forge(&apply, Some(&cookie), &replay("0123")), 403);

    // A viewer sees the letters but no way to change them, and its own POST is refused.
    browser.click("header form[action='/logout'] button");
    browser.wait_for("the login", WAIT, |b| {
        b.url().ends_with("/login").then_some(())
    });
    login(&browser, &console, VIEWER);
    browser.go(&format!("{console}/dead-letters?state=all"));
    assert!(browser.text("#letters").contains(&sid));
    for control in [
        "#replay-selected",
        "#replay-all",
        "#discard-selected",
        "input[name=id]",
    ] {
        assert!(browser.find(control).is_none(), "a viewer sees {control}");
    }
    browser.go(&format!("{console}/routing"));
    assert!(
        browser.find("#add-route").is_none(),
        "a viewer sees the route form"
    );
    let viewer_cookie = browser.cookie("ozg_session").expect("session cookie");
    let viewer_csrf = browser
        .run(
            "return document.querySelector('input[name=csrf]').value;",
            serde_json::json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    let refused = forge(
        &apply,
        Some(&viewer_cookie),
        &[
            ("csrf", viewer_csrf.as_str()),
            ("action", "replay"),
            ("id", letter.as_str()),
            ("expected", "1"),
        ],
    );
    assert_eq!(refused, 403, "a viewer's replay");
    let refused = forge(
        &format!("{console}/routing/routes"),
        Some(&viewer_cookie),
        &[
            ("csrf", viewer_csrf.as_str()),
            ("service", MELDE),
            ("region", "06"),
            ("destination", "he-a"),
            ("version", "0"),
        ],
    );
    assert_eq!(refused, 403, "a viewer's route");
    assert_no_payload(&browser);
    let late = drain_backoffice(&channel, "he-b", Duration::from_millis(500)).await;
    println!(
        "submitted 1 (no route), dead-lettered 1, replayed 1 from the console, delivered {} to he-b ({fate}), \
         delivered twice {}",
        arrived.len(),
        late.len()
    );
    assert!(late.is_empty(), "delivered twice");

    drop(browser);
    let _ = he.close(200, "done".into()).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_finds_municipalities_explains_routes_and_the_tail_shows_outcomes() {
    let v = Vhosts::create("console-directory", &["gw", "he"]);
    let gw = Admin::start(config(&v)).await;
    let console = format!("http://{}", gw.console.expect("console configured"));
    let browser = Browser::start(free_port(), 1400, 1100);
    login(&browser, &console, OPERATOR);

    // A part of a name finds the municipality, and its AGS does too.
    browser.go(&format!("{console}/routing?q=Abtst"));
    let regions = browser.text("#regions");
    assert!(
        regions.contains("Abtsteinach") && regions.contains("064310001001"),
        "{regions}"
    );
    browser.go(&format!("{console}/routing?q=06431001"));
    assert!(browser.text("#regions").contains("Abtsteinach"));

    // Where would it go, step by step: Darmstadt through its Kreis' route; Abtsteinach nowhere.
    browser.go(&format!(
        "{console}/routing/explain?service={MELDE}&region={DARMSTADT}"
    ));
    let walk = browser.text("#walk");
    assert!(
        walk.contains("064110000000") && walk.contains("06411"),
        "{walk}"
    );
    assert!(browser.text("#walk-result").contains("he-a"));
    save_screenshot(&browser, "explain");
    browser.go(&format!(
        "{console}/routing/explain?service={MELDE}&region=06431001"
    ));
    assert!(browser.text("#walk-result").contains("no-route"));

    // A route added, pointed elsewhere and deleted, each with the version the page showed,
    // each in the audit trail.
    let add = |region: &str, destination: &str, mode: &str| {
        browser.go(&format!("{console}/routing"));
        browser.type_into("#r-service", MELDE);
        browser.type_into("#r-region", region);
        browser.run(
            "document.getElementById('r-destination').value = arguments[0];\
             document.getElementById('r-mode').value = arguments[1];",
            serde_json::json!([destination, mode]),
        );
        browser.click("#save-route");
        browser.wait_for("the route saved", WAIT, |b| b.find("#notice").map(|_| ()));
    };
    add("06431", "he-b", "create");
    add("06431", "he-a", "update");
    browser.go(&format!(
        "{console}/routing/explain?service={MELDE}&region=06431001"
    ));
    assert!(browser.text("#walk-result").contains("he-a"));
    // A stale page's change is refused, not applied over the newer one.
    let stale = forge(
        &format!("{console}/routing/routes"),
        browser.cookie("ozg_session").as_deref(),
        &[
            (
                "csrf",
                browser
                    .run(
                        "return document.querySelector('input[name=csrf]').value;",
                        serde_json::json!([]),
                    )
                    .as_str()
                    .unwrap(),
            ),
            ("service", MELDE),
            ("region", "06431"),
            ("destination", "he-b"),
            ("mode", "update"),
            ("version", "1"),
        ],
    );
    assert_eq!(stale, 409, "a change on an old version");
    browser.go(&format!("{console}/routing?q=06431"));
    browser.click("#routes button.danger");
    browser.wait_for("the route deleted", WAIT, |b| b.find("#notice").map(|_| ()));
    let audit = browser.text("#audit");
    for action in ["route.create", "route.update", "route.delete"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    assert!(audit.contains("ops"));
    browser.go(&format!("{console}/routing?q=Abtst"));
    save_screenshot(&browser, "routing");

    // The live tail shows what happens as it happens.
    browser.go(&format!("{console}/tail?platform=civento-he"));
    browser.wait_for("the tail to connect", WAIT, |b| {
        b.text("#tail-status")
            .starts_with("Verbunden")
            .then_some(())
    });
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let s = marked(DARMSTADT);
    submit(&channel, &s, Encoding::Protobuf).await;
    browser.wait_for("the delivery in the tail", WAIT, |b| {
        let tail = b.text("#tail");
        (tail.contains(&s.submission_id) && tail.contains("delivered")).then_some(())
    });
    assert_no_payload(&browser);
    save_screenshot(&browser, "tail");
    let delivered = take_backoffice(&channel, "he-a", 1, WAIT).await;
    assert_eq!(delivered.len(), 1);

    // Payloads: not for a token without the payload role, whatever it sends.
    let refused = forge(
        &format!("{console}/dead-letters/00000000-0000-4000-8000-000000000000/payload"),
        browser.cookie("ozg_session").as_deref(),
        &[
            (
                "csrf",
                browser
                    .run(
                        "return document.querySelector('input[name=csrf]').value;",
                        serde_json::json!([]),
                    )
                    .as_str()
                    .unwrap(),
            ),
            ("justification", "checking"),
        ],
    );
    assert_eq!(refused, 403, "payload without the payload role");

    drop(browser);
    let _ = he.close(200, "done".into()).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_land_sees_and_changes_nothing_of_hessen() {
    let v = Vhosts::create("console-scope", &["gw", "he"]);
    let gw = Admin::start(config(&v)).await;
    let console = format!("http://{}", gw.console.expect("console configured"));
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let lost = marked(KASSEL);
    let sid = lost.submission_id.clone();
    submit(&channel, &lost, Encoding::Protobuf).await;

    let browser = Browser::start(free_port(), 1400, 1100);
    login(&browser, &console, OPERATOR);
    reload_until(
        &browser,
        &format!("{console}/dead-letters"),
        "#letters",
        &sid,
    );
    browser.click("header form[action='/logout'] button");
    browser.wait_for("the login", WAIT, |b| {
        b.url().ends_with("/login").then_some(())
    });

    // Thüringen's operators: Hessen's platform, letters and traces are not theirs.
    login(&browser, &console, TH_OPERATOR);
    assert!(
        browser.find("#platform-civento-he").is_none(),
        "a TH token sees Hessen's platform"
    );
    browser.go(&format!("{console}/dead-letters?state=all"));
    assert!(
        browser.find("#letters").is_none(),
        "a TH token sees Hessen's letters"
    );
    assert_eq!(browser.text("#h-groups"), "Anzahl nach Gruppen (0)");
    browser.go(&format!("{console}/trace?id={sid}"));
    assert!(
        !browser.text("main").contains("received"),
        "a TH token sees Hessen's trace"
    );
    // A Hessian route is not theirs to make: the service refuses it.
    browser.go(&format!("{console}/routing"));
    let csrf = browser
        .run(
            "return document.querySelector('input[name=csrf]').value;",
            serde_json::json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    let refused = forge(
        &format!("{console}/routing/routes"),
        browser.cookie("ozg_session").as_deref(),
        &[
            ("csrf", csrf.as_str()),
            ("service", MELDE),
            ("region", "06611"),
            ("destination", "he-b"),
            ("version", "0"),
        ],
    );
    assert_eq!(refused, 403, "a TH token's Hessian route");
    assert_accessible(&browser);
    assert_no_payload(&browser);
    println!("a TH token: 0 of 1 Hessian dead letters seen, its Hessian route refused (403)");

    drop(browser);
    let _ = he.close(200, "done".into()).await;
    gw.stop().await;
}

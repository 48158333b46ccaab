//! The web console (functions/console, docs/console.md): what the component serves
//! (content types, caching, revalidation, gzip, the Content-Security-Policy), and the
//! pages themselves in a real browser: Debian's Chromium driven by Playwright
//! (`playwright-core`, functions/console/web/tests/console.test.mjs) against the real
//! app, seeded through the device library with devices, a month of telemetry, a
//! rollout in progress, state and commands, and hostile strings wherever devices and
//! admins may put free text.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use toaster_device::{CommandOutcome, Config, Device, DeviceKey, Reading, ReportStatus, now_ms};
use toaster_tests::api::{Api, send};
use toaster_tests::{TestApp, workspace_root};

/// Every response of the console carries these.
fn assert_security_headers(response: &reqwest::Response) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("vary"), "accept-encoding");
}

/// The script and stylesheet index.html names (hashed names under assets/).
fn asset_paths(index: &str) -> Vec<String> {
    index
        .split('"')
        .filter(|s| s.starts_with("/console/assets/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_console_is_served_with_caching_revalidation_gzip_and_a_strict_csp() {
    let app = TestApp::start().await;
    let http = app.http();

    // `/` and `/console` send browsers to the console.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/console"] {
        let response = no_redirects.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 302, "{path}");
        assert_eq!(response.headers()["location"], "/console/");
    }

    // Every page of the application is index.html, never cached without revalidation.
    let page = http.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_security_headers(&page);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    let index = page.text().await.unwrap();
    assert!(index.contains("<div id=\"app\">"), "{index}");
    assert!(!index.contains("<script>"), "no inline script: {index}");
    for deep in ["/console/devices/lamp-1", "/console/audit?action=device."] {
        let response = http.get(app.url(deep)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{deep}");
        assert_eq!(response.headers()["etag"], etag.as_str(), "{deep}");
    }

    // Revalidation: 304 without a body, for the exact tag and for a weak one.
    for tag in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let again = http
            .get(app.url("/console/devices"))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{tag}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let changed = http
        .get(app.url("/console/"))
        .header("if-none-match", "\"another\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);

    // Hashed assets: a year, immutable; gzip when accepted, the same bytes unpacked.
    let assets = asset_paths(&index);
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "{index}"
    );
    for asset in &assets {
        let plain = http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(plain.status(), 200, "{asset}");
        assert_security_headers(&plain);
        let expected_type = if asset.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(plain.headers()["content-type"], expected_type, "{asset}");
        assert_eq!(
            plain.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(plain.headers().get("content-encoding").is_none());
        let plain = plain.bytes().await.unwrap();

        let zipped = http
            .get(app.url(asset))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(zipped.headers()["content-encoding"], "gzip", "{asset}");
        let zipped = zipped.bytes().await.unwrap();
        assert!(zipped.len() < plain.len(), "{asset}");
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain, "{asset}");

        let refused = http
            .get(app.url(asset))
            .header("accept-encoding", "gzip;q=0, br")
            .send()
            .await
            .unwrap();
        assert!(refused.headers().get("content-encoding").is_none());
    }

    // An asset of another build is 404 (not the page, which a script tag would run).
    let gone = http
        .get(app.url("/console/assets/index-00000000.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(gone.headers()["content-type"], "application/problem+json");

    // GET and HEAD only.
    let head = http.head(app.url("/console/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"], etag.as_str());
    let post = http
        .post(app.url("/console/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let problem: Value = post.json().await.unwrap();
    assert_eq!(problem["status"], 405);

    app.stop().await;
}

/// Chromium, from Debian's `chromium` package unless TOASTER_CHROMIUM names another.
fn chromium() -> PathBuf {
    let path = std::env::var_os("TOASTER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "the console's browser tests need Chromium at {}: install Debian's `chromium` package \
         (`apt-get install chromium`; .ci/run does) or point TOASTER_CHROMIUM at one",
        path.display()
    );
    path
}

/// What the browser test needs to know of the seeded app.
struct Seeded {
    hostile_device: String,
    rollout_id: String,
}

const HOSTILE: &str =
    "<img src=x onerror=\"window.__pwned='img'\"><script>window.__pwned='script'</script>";

async fn device(app: &TestApp, claim: &str, id: &str, tags: &[&str]) -> Device {
    let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    Device::provision(
        Config::new(&app.url("")).unwrap(),
        DeviceKey::generate(),
        claim,
        id,
        &tags,
    )
    .await
    .unwrap_or_else(|e| panic!("provision {id}: {e}"))
}

/// A month of hourly readings of four metrics, and the last two hours by the minute.
fn month_of_readings() -> Vec<Reading> {
    let now = now_ms();
    let hour = 3_600_000;
    let mut readings = Vec::new();
    let mut push = |ts: i64, i: i64| {
        let x = i as f64;
        readings.push(Reading::new("temp_c", ts, 20.0 + (x / 7.0).sin() * 3.0).unwrap());
        readings.push(Reading::new("humidity", ts, 45.0 + (x / 11.0).cos() * 10.0).unwrap());
        readings.push(Reading::new("voltage", ts, 3.3 - (i % 24) as f64 * 0.01).unwrap());
        readings.push(Reading::new("rssi", ts, -60.0 - (i % 13) as f64).unwrap());
    };
    for i in (3..29 * 24).rev() {
        push(now - i * hour, i);
    }
    for m in (0..120).rev() {
        push(now - m * 60_000, m);
    }
    readings
}

async fn seed(app: &TestApp, api: &Api<'_>, admin: &str) -> Seeded {
    let (status, claim) = send(api.post(
        "/v1/claims",
        admin,
        &json!({"model": "lamp", "channel": "stable", "quota": 10, "expires_in_secs": 3600}),
    ))
    .await;
    assert_eq!(status, 201, "{claim}");
    let claim = claim["claim_token"].as_str().unwrap().to_owned();

    let mut lamps = Vec::new();
    for (i, tags) in [
        &["floor:1", "kitchen"][..],
        &["floor:1"],
        &["floor:2"],
        &["floor:2", "hostile"],
    ]
    .iter()
    .enumerate()
    {
        lamps.push(device(app, &claim, &format!("lamp-{}", i + 1), tags).await);
    }
    // Sixty more, registered by the admin, for the list's pages.
    for i in 0..60 {
        let (status, body) = send(api.post(
            "/v1/devices",
            admin,
            &json!({"id": format!("sensor-{i:03}"), "model": "sensor", "channel": "beta",
                    "tags": ["bulk"], "public_key": DeviceKey::generate().public_key_pem().unwrap()}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
    }

    // Telemetry: a month for lamp-1, a little for the others.
    let receipt = lamps[0].post_telemetry(&month_of_readings()).await.unwrap();
    assert!(receipt.stored > 3000, "{receipt:?}");
    for lamp in &lamps[1..] {
        lamp.post_telemetry(&[Reading::now("temp_c", 21.5).unwrap()])
            .await
            .unwrap();
    }

    // A rollout in progress: offered to the lamps that its first stage takes; one
    // installs, one fails with a hostile error message.
    let (status, firmware) = send(api.post(
        "/v1/ota/firmware",
        admin,
        &json!({"model": "lamp", "version": "2.0.0",
                "url": "https://firmware.example.com/lamp-2.0.0.bin",
                "sha256": "ab".repeat(32), "size": 1_048_576, "notes": HOSTILE}),
    ))
    .await;
    assert_eq!(status, 201, "{firmware}");
    let (status, rollout) = send(api.post(
        "/v1/ota/rollouts",
        admin,
        &json!({"firmware_id": firmware["id"], "selector": {"channel": "stable", "versions": "*"},
                "stages": [75, 100], "failure_threshold": 0.9, "min_reports": 1}),
    ))
    .await;
    assert_eq!(status, 201, "{rollout}");
    let rollout_id = rollout["id"].as_str().unwrap().to_owned();
    let mut outcomes = [ReportStatus::Installed, ReportStatus::Failed].into_iter();
    for lamp in &lamps {
        if let Some(update) = lamp.check_update("1.0.0").await.unwrap() {
            let Some(outcome) = outcomes.next() else {
                break;
            };
            let error = matches!(outcome, ReportStatus::Failed).then_some(HOSTILE);
            lamp.report_update(&update.manifest.rollout_id, outcome, "2.0.0", error)
                .await
                .unwrap();
        }
    }

    // State: plain on lamp-1, hostile on lamp-4 (tags and ids cannot hold markup: the
    // API allows only [A-Za-z0-9._:=-] there).
    lamps[0]
        .report_state(&json!({"power": "on", "brightness": 40}))
        .await
        .unwrap();
    lamps[3]
        .report_state(&json!({"label": HOSTILE, HOSTILE: "as a member name"}))
        .await
        .unwrap();
    let (status, body) = send(api.merge_patch(
        "/v1/devices/lamp-4/state/desired",
        admin,
        &json!({"label": HOSTILE}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    // A command whose output is hostile, already finished.
    let (status, body) = send(api.post(
        "/v1/devices/lamp-4/commands",
        admin,
        &json!({"name": "identify", "parameters": {"note": HOSTILE}}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    lamps[3]
        .run_commands(|_| async { CommandOutcome::Failed(Some(json!({"error": HOSTILE}))) })
        .await
        .unwrap();

    // lamp-1 answers its commands while the browser runs, so the page sees them finish.
    let responder = lamps[0].clone();
    tokio::spawn(async move {
        let _ = responder
            .command_loop(Duration::from_millis(300), |c| async move {
                CommandOutcome::Succeeded(Some(json!({"done": c.name})))
            })
            .await;
    });

    Seeded {
        hostile_device: "lamp-4".into(),
        rollout_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_page_works_in_a_real_browser() {
    let chromium = chromium();
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    // A second tenant, named with markup, for the operator's tenant list.
    let (status, body) = send(api.post(
        "/v1/tenants",
        &app.operator_token(),
        &json!({"id": "globex", "name": format!("Globex {HOSTILE}")}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let seeded = seed(&app, &api, &admin).await;

    // Expired an hour ago (beyond the verifier's 5 s of leeway).
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let expired = app
        .signer
        .mint_at(
            &toaster_core::token::AccessClaims::admin(
                toaster_core::ids::TenantId::parse("acme").unwrap(),
                "expired",
            ),
            Duration::from_secs(60),
            an_hour_ago,
        )
        .unwrap();
    let web = workspace_root().join("functions/console/web");
    let screenshots = toaster_tests::target_dir().join("console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let env = BTreeMap::from([
        ("TOASTER_URL", app.url("")),
        ("TOASTER_ADMIN_TOKEN", admin.clone()),
        ("TOASTER_OPERATOR_TOKEN", app.operator_token()),
        // Revoked by the test to see the session end.
        ("TOASTER_SHORT_TOKEN", app.admin_token("acme")),
        ("TOASTER_EXPIRED_TOKEN", expired),
        ("TOASTER_TENANT", "acme".into()),
        ("TOASTER_DEVICE", "lamp-1".into()),
        ("TOASTER_DISABLE_DEVICE", "lamp-2".into()),
        ("TOASTER_HOSTILE_DEVICE", seeded.hostile_device),
        ("TOASTER_ROLLOUT", seeded.rollout_id),
        ("TOASTER_SCREENSHOTS", screenshots.display().to_string()),
        ("CHROMIUM", chromium.display().to_string()),
    ]);
    let mut node = tokio::process::Command::new("node");
    node.args(["--test", "--test-concurrency=1", "tests/"])
        .current_dir(&web)
        .envs(env)
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(600), node.status())
        .await
        .expect("the browser tests finish within 10 minutes")
        .expect("node runs (Node.js 20.19+ is needed; see README)");
    assert!(
        status.success(),
        "the browser tests failed ({status}); their output is above, screenshots in {}",
        screenshots.display()
    );
    app.stop().await;
}

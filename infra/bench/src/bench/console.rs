//! Scenario `console` (issue 25): the web console's static answers and its first load.
//!
//! - Requests/s of the `console` component's two common answers, against the host's
//!   trivial component (`hello`) in the same run: a hashed asset (the script, gzip),
//!   and the revalidation of `index.html` (`If-None-Match` → 304). A figure to watch,
//!   no target.
//! - The compressed bytes of script and style on first load (target: under 150 KB),
//!   from the component's gzip answers.
//! - First loads in headless Chromium (functions/console/web/tests/load-time.mjs), each
//!   in a new browser context (an empty cache): the fleet page, and a device page with
//!   30 days of hourly data for four metrics at the 30-day range, from navigation to
//!   the charts drawn (target: under 1 s). Needs Node.js with the console's npm
//!   packages and Chromium (`/usr/bin/chromium` or `TOASTER_CHROMIUM`); without them
//!   that part says so and is skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::app::AppUnderTest;
use super::{load, load_expecting, load_with};

const CONNECTIONS: usize = 16;
const DEVICE: &str = "console-00000";
const METRICS: [&str; 4] = ["temp_c", "humidity", "voltage", "rssi"];

/// Runs the scenario; the markdown section for BENCHMARKS.md.
pub async fn console(
    app: &AppUnderTest,
    workspace: &Path,
    duration: Duration,
) -> anyhow::Result<String> {
    let trivial = {
        let host = super::HelloHost::start(workspace, "console").await?;
        let at = host.server.endpoint();
        load(at, "/", CONNECTIONS, Duration::from_millis(500)).await?;
        let m = load(at, "/", CONNECTIONS, duration).await?;
        host.stop().await?;
        m
    };

    let (index, etag) = fetch(app, "/console/", None).await?;
    let index = String::from_utf8(index.to_vec()).context("index.html is UTF-8")?;
    let assets: Vec<String> = index
        .split('"')
        .filter(|s| s.starts_with("/console/assets/"))
        .map(str::to_owned)
        .collect();
    let mut compressed = 0;
    for asset in &assets {
        compressed += fetch(app, asset, Some("gzip")).await?.0.len();
    }
    let script = assets
        .iter()
        .find(|a| a.ends_with(".js"))
        .context("index.html names no script")?
        .clone();

    let asset = load_with(app.endpoint(), CONNECTIONS, duration, gzip_get(&script)).await?;
    let etag = etag.context("index.html has no ETag")?;
    let revalidate = load_expecting(
        app.endpoint(),
        CONNECTIONS,
        duration,
        revalidation(etag),
        |status| status == http::StatusCode::NOT_MODIFIED,
    )
    .await?;

    let browser = match first_loads(app, workspace).await {
        Ok(line) => line,
        Err(e) => format!("First loads in the browser: skipped ({e:#})."),
    };
    let table = super::ratio_table(
        "hello",
        &trivial,
        &[
            ("trivial component (`hello`)", &trivial),
            (
                "hashed asset, gzip (`GET /console/assets/index-….js`)",
                &asset,
            ),
            (
                "`index.html` revalidated (`If-None-Match` → 304)",
                &revalidate,
            ),
        ],
    );
    Ok(format!(
        "The console's first load: {} files of script and style, {:.1} KB compressed (gzip; target under 150 KB). {browser}\n\nThe component's static answers against the trivial component in the same run (a figure to watch, no target):\n\n{table}",
        assets.len(),
        compressed as f64 / 1024.0,
    ))
}

/// `GET path` (with `Accept-Encoding` when given): the body as sent, and the ETag.
async fn fetch(
    app: &AppUnderTest,
    path: &str,
    encoding: Option<&str>,
) -> anyhow::Result<(Bytes, Option<String>)> {
    let mut req = http::Request::get(format!("http://{}{path}", app.addr()));
    if let Some(encoding) = encoding {
        req = req.header("accept-encoding", encoding);
    }
    let resp = app
        .client
        .request(req.body(Full::new(Bytes::new()))?)
        .await?;
    anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((resp.into_body().collect().await?.to_bytes(), etag))
}

fn gzip_get(path: &str) -> super::RequestFactory {
    let path = path.to_owned();
    Arc::new(move |_: usize, _: u64| {
        http::Request::get(&path)
            .header(http::header::HOST, "127.0.0.1")
            .header("accept-encoding", "gzip")
            .body(Full::new(Bytes::new()))
            .expect("request")
    })
}

fn revalidation(etag: String) -> super::RequestFactory {
    Arc::new(move |_: usize, _: u64| {
        http::Request::get("/console/")
            .header(http::header::HOST, "127.0.0.1")
            .header("accept-encoding", "gzip")
            .header("if-none-match", etag.as_str())
            .body(Full::new(Bytes::new()))
            .expect("request")
    })
}

/// Seeds a device with 30 days of hourly readings of four metrics (through the API,
/// as a device posts them), runs load-time.mjs, and describes its figures.
async fn first_loads(app: &AppUnderTest, workspace: &Path) -> anyhow::Result<String> {
    let chromium = std::env::var("TOASTER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    anyhow::ensure!(Path::new(&chromium).exists(), "no Chromium at {chromium}");
    let web = workspace.join("functions/console/web");
    anyhow::ensure!(
        web.join("node_modules/playwright-core").exists(),
        "the console's npm packages are not installed (scripts/build-console)"
    );
    let (_, tokens) = app.device_fleet("console", "bench-console", 1).await?;
    let device = tokens[0].trim_start_matches("Bearer ").to_owned();
    let now = chrono::Utc::now().timestamp_millis();
    let hour = 3_600_000;
    let readings: Vec<serde_json::Value> = (0..30 * 24)
        .flat_map(|i| {
            METRICS.iter().enumerate().map(move |(m, metric)| {
                serde_json::json!({"metric": metric, "ts": now - i * hour,
                    "value": 20.0 + m as f64 + ((i as f64) / 9.0).sin()})
            })
        })
        .collect();
    app.call(
        "POST",
        "/v1/telemetry",
        &device,
        serde_json::json!({"readings": readings}),
    )
    .await?;

    let out = tokio::process::Command::new("node")
        .arg("tests/load-time.mjs")
        .current_dir(&web)
        .env("TOASTER_URL", format!("http://{}", app.addr()))
        .env("TOASTER_ADMIN_TOKEN", app.admin_token()?)
        .env("TOASTER_DEVICE", DEVICE)
        .env("CHROMIUM", &chromium)
        .env("RUNS", "5")
        .output()
        .await
        .context("running node")?;
    anyhow::ensure!(
        out.status.success(),
        "load-time.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .context("load-time.mjs printed no figures")?,
    )?;
    let ms = |name: &str| -> Vec<u64> {
        let mut v: Vec<u64> = figures[name]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    };
    let describe = |v: &[u64]| {
        format!(
            "median {} ms (runs: {})",
            v.get(v.len() / 2).copied().unwrap_or_default(),
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        )
    };
    Ok(format!(
        "First loads in headless Chromium, each in a new browser context (empty cache), from navigation (sign-in link included) to the charts drawn (target under 1 s): the fleet page {}; a device page with 30 days of hourly data for 4 metrics at the 30-day range {}. The browser counted {:.1} KB transferred for script and style (compressed bodies and headers).",
        describe(&ms("fleet_ms")),
        describe(&ms("device_ms")),
        figures["script_style_transfer_bytes"]
            .as_f64()
            .unwrap_or_default()
            / 1024.0,
    ))
}

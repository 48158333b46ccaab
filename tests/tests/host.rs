//! The host, end to end: the probe component served by `toaster_host::start`
//! against a real PostgreSQL (one fresh database per test).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toaster_host::Limits;
use toaster_tests::{HostOptions, TestDb, TestHost};

/// Two components from one wasm: `probe` is granted the default store, PostgreSQL
/// and outgoing HTTP to 127.0.0.1; `limited` is granted nothing.
const PROBE_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "probe-app"

[variables]
db_url = { required = true, secret = true }
db_host = { default = "127.0.0.1:5432" }
greeting = { default = "hello from the manifest" }
api_key = { required = true, secret = true }

[[trigger.http]]
route = "/probe/..."
component = "probe"
[[trigger.http]]
route = "/exact"
component = "probe"
[[trigger.http]]
route = "/wild/..."
component = "probe"
[[trigger.http]]
route = "/wild/deeper/..."
component = "limited"
[[trigger.http]]
route = "/limited/..."
component = "limited"

[component.probe]
source = "{wasm:probe}"
allowed_outbound_hosts = ["postgres://{{ db_host }}", "http://127.0.0.1:*"]
key_value_stores = ["default"]
[component.probe.variables]
component_name = "probe"
greeting = "{{ greeting }}"
api_key = "{{ api_key }}"
db_url = "{{ db_url }}"

[component.limited]
source = "{wasm:probe}"
[component.limited.variables]
component_name = "limited"
db_url = "{{ db_url }}"
"#;

/// The probe app with one more route.
fn with_route(route: &str, component: &str) -> String {
    format!("{PROBE_APP}\n[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"{component}\"\n")
}

fn vars(db: &TestDb) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("db_url".to_string(), db.url.clone()),
        ("db_host".to_string(), db.host_port()),
        ("api_key".to_string(), "s3cret-from-flag".to_string()),
    ])
}

async fn probe_host(db: &TestDb) -> TestHost {
    TestHost::start(
        PROBE_APP,
        HostOptions {
            variables: vars(db),
            ..Default::default()
        },
    )
    .await
    .expect("host starts")
}

async fn get_json(h: &TestHost, path: &str) -> (u16, Value) {
    let r = h.http.get(h.url(path)).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn routes_pick_the_most_specific_and_set_spin_headers() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;

    let r = h
        .http
        .get(h.url("/wild/a/b?x=1"))
        .header("spin-path-info", "/forged")
        .header("spin-client-addr", "6.6.6.6:1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["component"], "probe");
    assert_eq!(v["path"], "/wild/a/b");
    assert_eq!(v["query"], "x=1");
    let hd = &v["headers"];
    assert_eq!(
        hd["spin-path-info"], "/a/b",
        "client-sent spin-* headers are replaced"
    );
    assert_eq!(hd["spin-matched-route"], "/wild/...");
    assert_eq!(hd["spin-raw-component-route"], "/wild/...");
    assert_eq!(hd["spin-component-route"], "/wild");
    assert_eq!(hd["spin-base-path"], "/");
    assert_eq!(
        hd["spin-full-url"],
        format!("http://{}/wild/a/b?x=1", h.addr)
    );
    let client = hd["spin-client-addr"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "{client}");

    let (_, v) = get_json(&h, "/wild/deeper/x").await;
    assert_eq!(v["component"], "limited", "the longer wildcard wins");
    assert_eq!(v["headers"]["spin-path-info"], "/x");

    let (_, v) = get_json(&h, "/wild").await;
    assert_eq!(v["component"], "probe", "`/wild/...` also matches `/wild`");
    assert_eq!(v["headers"]["spin-path-info"], "");

    let (_, v) = get_json(&h, "/exact").await;
    assert_eq!(v["headers"]["spin-matched-route"], "/exact");
    assert_eq!(v["headers"]["spin-path-info"], "");

    for path in ["/exact/more", "/nowhere", "/wildcard"] {
        let r = h.http.get(h.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], 404);
    }
    h.stop().await;
}

#[tokio::test]
async fn key_value_persists_across_restarts_and_is_granted_per_component() {
    let db = TestDb::new().await;
    let state = tempfile::tempdir().unwrap();
    let opts = || HostOptions {
        variables: vars(&db),
        state_dir: Some(state.path().to_path_buf()),
        ..Default::default()
    };
    let h = TestHost::start(PROBE_APP, opts()).await.unwrap();
    let r = h
        .http
        .put(h.url("/probe/kv/default/greeting"))
        .body("bonjour")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    h.http
        .put(h.url("/probe/kv/default/gone"))
        .body("x")
        .send()
        .await
        .unwrap();
    let r = h
        .http
        .delete(h.url("/probe/kv/default/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    h.stop().await;

    let h = TestHost::start(PROBE_APP, opts()).await.unwrap();
    let r = h
        .http
        .get(h.url("/probe/kv/default/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "bonjour",
        "the value survived the restart"
    );
    let r = h
        .http
        .get(h.url("/probe/kv/default/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, keys) = get_json(&h, "/probe/kv/default").await;
    assert_eq!(keys, json!(["greeting"]));
    let (status, v) = get_json(&h, "/probe/kv/secrets/x").await;
    assert_eq!((status, v["error"].as_str()), (409, Some("access-denied")));
    h.stop().await;
}

/// The `limited` component shares the probe's wasm but was granted no store.
#[tokio::test]
async fn a_component_cannot_open_a_store_it_was_not_granted() {
    let db = TestDb::new().await;
    let manifest = with_route("/probe/kv/...", "limited");
    let h = TestHost::start(
        &manifest,
        HostOptions {
            variables: vars(&db),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (status, v) = get_json(&h, "/probe/kv/default/k").await;
    assert_eq!(
        v["headers"],
        Value::Null,
        "served by the probe code, not the echo"
    );
    assert_eq!((status, v["error"].as_str()), (409, Some("access-denied")));
    h.stop().await;
}

#[tokio::test]
async fn variables_come_from_defaults_flags_and_templates() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let r = h
        .http
        .get(h.url("/probe/var/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from the manifest");
    let r = h
        .http
        .get(h.url("/probe/var/api_key"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "s3cret-from-flag");
    let (status, v) = get_json(&h, "/probe/var/db_host").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("undefined")),
        "not granted to the component"
    );
    let (status, v) = get_json(&h, "/probe/var/Bad-Name").await;
    assert_eq!((status, v["error"].as_str()), (404, Some("invalid-name")));
    h.stop().await;
}

#[tokio::test]
async fn a_missing_required_variable_stops_the_host_at_start() {
    let db = TestDb::new().await;
    let mut variables = vars(&db);
    variables.remove("api_key");
    let err = match TestHost::start(
        PROBE_APP,
        HostOptions {
            variables,
            ..Default::default()
        },
    )
    .await
    {
        Ok(_) => panic!("the host started without a required variable"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("api_key"), "{err}");
    assert!(
        err.contains("SPIN_VARIABLE_"),
        "the error says how to set it: {err}"
    );
}

async fn pg(h: &TestHost, body: Value) -> Value {
    let r = h
        .http
        .post(h.url("/probe/pg"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn postgres_round_trips_every_type_the_functions_use() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let params = json!([
        {"t": "boolean", "v": true},
        {"t": "int16", "v": -7},
        {"t": "int32", "v": 2147483647},
        {"t": "int64", "v": 9007199254740993i64},
        {"t": "floating32", "v": 1.5},
        {"t": "floating64", "v": -2.25},
        {"t": "str", "v": "tö'ast\"er; DROP TABLE x"},
        {"t": "binary", "v": [0, 1, 255]},
        {"t": "date", "v": [2026, 2, 28]},
        {"t": "time", "v": [23, 59, 58, 123000000]},
        {"t": "datetime", "v": [2026, 11, 22, 10, 0, 0, 500000000]},
        {"t": "timestamp", "v": 1795255200},
        {"t": "uuid", "v": "67e55044-10b1-426f-9247-bb680e5fe0c8"},
        {"t": "jsonb", "v": {"a": [1, 2, {"b": null}]}},
        {"t": "decimal", "v": "12345.6789"},
        {"t": "array-int32", "v": [1, null, 3]},
        {"t": "array-int64", "v": [9007199254740993i64, null]},
        {"t": "array-str", "v": ["a", null, "c"]},
        {"t": "interval", "v": {"micros": 1500000, "days": 2, "months": 3}},
        {"t": "null"},
        {"t": "int8", "v": 65},
    ]);
    let sql = "SELECT $1::bool, $2::int2, $3::int4, $4::int8, $5::float4, $6::float8, $7::text, \
               $8::bytea, $9::date, $10::time, $11::timestamp, $12::timestamptz, $13::uuid, $14::jsonb, \
               $15::numeric, $16::int4[], $17::int8[], $18::text[], $19::interval, $20::int8, $21::\"char\"";
    let v = pg(
        &h,
        json!({"steps": [{"op": "query", "sql": sql, "params": params}]}),
    )
    .await;
    assert_eq!(v["open_error"], Value::Null, "{v}");
    let result = &v["results"][0];
    let row = result["rows"][0]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    let expected: Vec<Value> = params.as_array().unwrap().clone();
    // Every value comes back as it was sent, except timestamptz, which comes back as a UTC datetime.
    for (i, (got, sent)) in row.iter().zip(&expected).enumerate() {
        match i {
            11 => assert_eq!(
                got,
                &json!({"t": "datetime", "v": [2026, 11, 21, 10, 0, 0, 0]})
            ),
            _ => assert_eq!(got, sent, "column {}", i + 1),
        }
    }
    let types: Vec<&str> = result["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "boolean",
            "int16",
            "int32",
            "int64",
            "floating32",
            "floating64",
            "str",
            "binary",
            "date",
            "time",
            "datetime",
            "datetime",
            "uuid",
            "jsonb",
            "decimal",
            "array-int32",
            "array-int64",
            "array-str",
            "interval",
            "int64",
            "int8"
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn postgres_transactions_commit_and_roll_back_on_one_session() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let v = pg(
        &h,
        json!({"steps": [
            {"op": "execute", "sql": "CREATE TABLE t (id int8 PRIMARY KEY, note text NOT NULL)", "params": []},
            {"op": "execute", "sql": "BEGIN", "params": []},
            {"op": "execute", "sql": "INSERT INTO t VALUES ($1, $2)", "params": [{"t": "int64", "v": 1}, {"t": "str", "v": "kept"}]},
            {"op": "execute", "sql": "COMMIT", "params": []},
            {"op": "execute", "sql": "BEGIN", "params": []},
            {"op": "execute", "sql": "INSERT INTO t VALUES ($1, $2)", "params": [{"t": "int64", "v": 2}, {"t": "str", "v": "dropped"}]},
            {"op": "execute", "sql": "ROLLBACK", "params": []},
            {"op": "query", "sql": "SELECT id, note FROM t ORDER BY id", "params": []},
        ]}),
    )
    .await;
    assert_eq!(v["results"][2], json!({"affected": 1}), "{v}");
    assert_eq!(
        v["results"][7]["rows"],
        json!([[{"t": "int64", "v": 1}, {"t": "str", "v": "kept"}]]),
        "{v}"
    );

    // A transaction left open by a request is rolled back, never leaked to the next one.
    let v = pg(
        &h,
        json!({"steps": [
            {"op": "execute", "sql": "BEGIN", "params": []},
            {"op": "execute", "sql": "INSERT INTO t VALUES (3, 'abandoned')", "params": []},
        ]}),
    )
    .await;
    assert_eq!(v["results"][1], json!({"affected": 1}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = db
        .client()
        .await
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1]);
    let v = pg(
        &h,
        json!({"steps": [{"op": "query", "sql": "SELECT count(*) FROM t", "params": []}]}),
    )
    .await;
    assert_eq!(
        v["results"][0]["rows"],
        json!([[{"t": "int64", "v": 1}]]),
        "{v}"
    );
    h.stop().await;
}

#[tokio::test]
async fn postgres_errors_are_returned_to_the_component_not_trapped() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let v = pg(
        &h,
        json!({"steps": [
            {"op": "query", "sql": "SELEC nonsense", "params": []},
            {"op": "execute", "sql": "CREATE TABLE u (id int4 PRIMARY KEY)", "params": []},
            {"op": "execute", "sql": "INSERT INTO u VALUES (1)", "params": []},
            {"op": "execute", "sql": "INSERT INTO u VALUES (1)", "params": []},
            {"op": "query", "sql": "SELECT $1::int4", "params": [{"t": "str", "v": "not an int"}]},
            {"op": "query", "sql": "SELECT $1::jsonb", "params": [{"t": "jsonb", "v": 1}]},
        ]}),
    )
    .await;
    let r = &v["results"];
    assert_eq!(r[0]["error"]["kind"], "query-failed", "{v}");
    assert_eq!(r[0]["error"]["code"], "42601", "syntax error SQLSTATE: {v}");
    assert_eq!(r[3]["error"]["code"], "23505", "unique violation: {v}");
    assert_eq!(r[4]["error"]["kind"], "bad-parameter", "{v}");
    assert_eq!(r[5]["rows"][0][0], json!({"t": "jsonb", "v": 1}));
    // The host keeps serving the same component.
    let r = h.http.get(h.url("/probe/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn postgres_hosts_outside_allowed_outbound_hosts_are_refused() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    // Same server, but an address the component was not granted.
    let other = db.url.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(other, db.url, "test database URL should name 127.0.0.1");
    let v = pg(&h, json!({"url": other, "steps": []})).await;
    assert_eq!(v["open_error"]["kind"], "connection-failed", "{v}");
    assert!(
        v["open_error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_outbound_hosts"),
        "{v}"
    );
    // A component granted no hosts cannot reach the database at all.
    let manifest = with_route("/probe/pg", "limited");
    let h2 = TestHost::start(
        &manifest,
        HostOptions {
            variables: vars(&db),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = h2
        .http
        .post(h2.url("/probe/pg"))
        .json(&json!({"steps": []}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["open_error"]["kind"], "connection-failed", "{v}");
    h.stop().await;
    h2.stop().await;
}

#[tokio::test]
async fn outgoing_http_is_limited_to_allowed_hosts() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let port = h.addr.port();
    let send = |url: String| {
        let h = &h;
        async move {
            let r = h
                .http
                .post(h.url("/probe/http"))
                .json(&json!({"url": url, "method": "GET"}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let v = send(format!("http://127.0.0.1:{port}/probe/hello")).await;
    assert_eq!(v["status"], 200, "allowed: {v}");
    let v = send(format!("http://localhost:{port}/probe/hello")).await;
    assert!(
        v["error"].as_str().unwrap_or("").contains("Denied"),
        "refused: {v}"
    );
    let v = send(format!("https://127.0.0.1:{port}/")).await;
    assert!(
        v["error"].as_str().unwrap_or("").contains("Denied"),
        "wrong scheme refused: {v}"
    );

    let manifest = with_route("/probe/http", "limited");
    let h2 = TestHost::start(
        &manifest,
        HostOptions {
            variables: vars(&db),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = h2
        .http
        .post(h2.url("/probe/http"))
        .json(&json!({"url": format!("http://127.0.0.1:{port}/probe/hello")}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap_or("").contains("Denied"),
        "no grants, no requests: {v}"
    );
    h.stop().await;
    h2.stop().await;
}

#[tokio::test]
async fn a_trapping_component_gets_500_and_the_host_keeps_serving() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    for _ in 0..3 {
        let r = h.http.get(h.url("/probe/trap")).send().await.unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("deliberate"),
            "the panic message stays in the log: {body}"
        );
        let r = h.http.get(h.url("/probe/hello")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    h.stop().await;
}

/// What the host logs on this thread: the test's runtime (one thread) runs the server,
/// the guests and the client, so a thread-local subscriber sees all of it.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Collects on this thread, filtered as `RUST_LOG=filter` would.
    fn collect(&self, filter: &str) -> impl Sized {
        use tracing_subscriber::util::SubscriberInitExt;
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish()
            .set_default()
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The one line holding every piece of `wanted`.
    fn line(&self, wanted: &[&str]) -> String {
        let lines = self.lines();
        let found: Vec<&String> = lines
            .iter()
            .filter(|l| wanted.iter().all(|w| l.contains(w)))
            .collect();
        assert_eq!(found.len(), 1, "{wanted:?} in {lines:#?}");
        found[0].clone()
    }
}

/// `name=value` in a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + name.len()
        + 2;
    line[start..].split(' ').next().unwrap()
}

#[tokio::test]
async fn component_output_is_logged_with_the_component_and_the_request_id() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let logs = Logs::default();
    let guard = logs.collect("toaster::access=info,toaster::component=info,toaster_host=info");

    let r = h
        .http
        .post(h.url("/probe/log"))
        .body("probe: a line from the guest\nand a last one without a newline")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = h.http.get(h.url("/probe/trap")).send().await.unwrap();
    assert_eq!(r.status(), 500);

    // Each line the guest wrote is one event, however it was written (the probe
    // writes five bytes at a time), with the component, the stream and the request's
    // id; the access line carries the same id.
    let line = logs.line(&["toaster::component", "probe: a line from the guest"]);
    assert_eq!(field(&line, "component"), "probe", "{line}");
    assert_eq!(field(&line, "stream"), "\"stderr\"", "{line}");
    let id = field(&line, "request_id");
    assert_eq!(id.len(), 8, "{line}");
    let rest = logs.line(&["toaster::component", "and a last one without a newline"]);
    assert_eq!(field(&rest, "request_id"), id);
    let stdout = logs.line(&["toaster::component", "probe: to stdout"]);
    assert_eq!(field(&stdout, "request_id"), id);
    assert_eq!(field(&stdout, "stream"), "\"stdout\"");
    let access = logs.line(&["toaster::access", "path=/probe/log"]);
    assert_eq!(field(&access, "request_id"), id, "{access}");
    assert_eq!(field(&access, "component"), "\"probe\"", "{access}");

    // A trap: the guest's panic message and the host's line share the request's id.
    let access = logs.line(&["toaster::access", "path=/probe/trap"]);
    let trap_id = field(&access, "request_id");
    assert_ne!(trap_id, id);
    let panic = logs.line(&["toaster::component", "deliberate trap"]);
    assert_eq!(field(&panic, "request_id"), trap_id, "{panic}");
    let failed = logs.line(&["component failed"]);
    assert_eq!(field(&failed, "request_id"), trap_id, "{failed}");
    drop(guard);

    // RUST_LOG filters the guest's lines like any other target.
    let quiet = Logs::default();
    let guard = quiet.collect("toaster::access=info,toaster::component=off");
    let r = h
        .http
        .post(h.url("/probe/log"))
        .body("hidden\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    drop(guard);
    let lines = quiet.lines();
    assert!(
        lines.iter().any(|l| l.contains("path=/probe/log")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("hidden")), "{lines:#?}");
    h.stop().await;
}

#[tokio::test]
async fn a_component_that_never_returns_is_stopped_by_the_timeout() {
    let db = TestDb::new().await;
    let h = TestHost::start(
        PROBE_APP,
        HostOptions {
            variables: vars(&db),
            limits: Limits {
                request_timeout: Duration::from_millis(1500),
                ..Limits::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    let looping = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/probe/loop"));
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    });
    // While one instance spins, others are served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = h.http.get(h.url("/probe/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(looping.await.unwrap(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let r = h.http.get(h.url("/probe/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Waiting in a host call is not wasm code, so epochs do not stop it: the wall-clock
    // deadline does, and the host keeps serving.
    let started = Instant::now();
    let r = h
        .http
        .post(h.url("/probe/pg"))
        .json(&json!({"steps": [{"op": "query", "sql": "SELECT pg_sleep(20)", "params": []}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let r = h.http.get(h.url("/probe/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_before_the_component_runs() {
    let db = TestDb::new().await;
    let h = TestHost::start(
        PROBE_APP,
        HostOptions {
            variables: vars(&db),
            limits: Limits {
                max_body_bytes: 1024,
                ..Limits::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = h
        .http
        .post(h.url("/probe/echo"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-body-len"], "1024");
    let r = h
        .http
        .post(h.url("/probe/echo"))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Without Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..8)
        .map(|_| Ok(bytes::Bytes::from(vec![b'b'; 512])))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_stream(chunks));
    let r = h
        .http
        .post(h.url("/probe/echo"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    h.stop().await;
}

/// A response larger than the host buffers (256 KiB) goes out while the guest is still
/// writing it, the rest of the guest's work running after the response has started.
#[tokio::test]
async fn a_large_response_streams_whole_while_the_guest_still_writes() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 7)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for _ in 0..3 {
        let r = h
            .http
            .post(h.url("/probe/echo"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-body-len"], body.len().to_string().as_str());
        let echoed = r.bytes().await.unwrap();
        assert_eq!(echoed.len(), body.len());
        assert!(echoed == body, "the echoed body differs");
        let r = h.http.get(h.url("/probe/hello")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    h.stop().await;
}

fn futures_stream(
    items: Vec<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::iter(items)
}

#[tokio::test]
async fn healthz_follows_postgres() {
    let db = TestDb::new().await;
    let h = probe_host(&db).await;
    let r = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;

    // A database nobody listens on.
    let mut variables = vars(&db);
    variables.insert(
        "db_url".into(),
        "postgres://postgres@127.0.0.1:1/postgres".into(),
    );
    let h = TestHost::start(
        PROBE_APP,
        HostOptions {
            variables,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    h.stop().await;
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDb::new().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let h = TestHost::start(
        PROBE_APP,
        HostOptions {
            variables: vars(&db),
            tls: Some((cert_path, key_path)),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the host");
    tls.write_all(b"GET /wild/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"spin-full-url\":\"https://localhost/wild/x\""),
        "{response}"
    );

    // Plain HTTP to a TLS listener gets nowhere.
    let r = h.http.get(h.url("/probe/hello")).send().await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    h.stop().await;
}

#[tokio::test]
async fn a_component_that_fails_to_compile_is_named_at_start() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.wasm");
    std::fs::write(&bad, b"\0asm not really").unwrap();
    let manifest = format!(
        "{PROBE_APP}\n[[trigger.http]]\nroute = \"/broken/...\"\ncomponent = \"broken\"\n[component.broken]\nsource = \"{}\"\n",
        bad.display()
    );
    let err = match TestHost::start(
        &manifest,
        HostOptions {
            variables: vars(&db),
            ..Default::default()
        },
    )
    .await
    {
        Ok(_) => panic!("a broken component was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("\"broken\""), "{err}");
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

/// The platform contract (docs/host.md, "Platform contract"): the app's components
/// import only WASI 0.2 and the three Spin interfaces, and export only
/// wasi:http/incoming-handler.
#[test]
fn app_components_import_only_the_platform_contract() {
    let rt = toaster_tests::runtime();
    for name in ["auth", "ingest", "ota", "aggregate", "control"] {
        let (imports, exports) =
            toaster_host::runtime::component_interfaces(rt, &toaster_tests::wasm(name)).unwrap();
        for i in &imports {
            let ok = (i.starts_with("wasi:") && i.contains("@0.2."))
                || toaster_host::runtime::ALLOWED_SPIN_IMPORTS.contains(&i.as_str());
            assert!(ok, "{name} imports {i}");
        }
        assert_eq!(
            exports,
            vec!["wasi:http/incoming-handler@0.2.0".to_string()],
            "{name}"
        );
    }
}

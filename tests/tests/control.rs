//! Talking back to devices end to end: state documents and commands through the real
//! `control` component in the host (or Spin), against a fresh database per test.
//!
//! Tenants are created through the API; devices are inserted with SQL matching
//! `0001_identity.sql` (as the OTA tests do) and their tokens minted with the app's
//! signing key (what `POST /v1/auth/token` hands out).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use toaster_host::Limits;
use toaster_tests::TestApp;
use toaster_tests::api::{Api, send};

/// Inserts `ids` as active devices of `tenant`.
async fn devices(api: &Api<'_>, tenant: &str, ids: &[&str], model: &str, tags: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|t| t.to_string()).collect();
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    api.sql(
        "INSERT INTO devices (tenant_id, device_id, model, channel, tags) \
         SELECT $1, id, $3, 'stable', $4 FROM unnest($2::text[]) AS id",
        &[&tenant, &ids, &model, &tags],
    )
    .await;
}

/// Sends a command to `device`; the command.
async fn command(api: &Api<'_>, admin: &str, device: &str, body: Value) -> Value {
    let (status, body) =
        send(api.post(&format!("/v1/devices/{device}/commands"), admin, &body)).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// One fleet: tenant `acme` with lamps `l1`, `l2` (tag `floor:3`) and a thermostat `t1`.
async fn fleet(api: &Api<'_>) -> String {
    let admin = api.tenant("acme").await;
    devices(api, "acme", &["l1", "l2"], "lamp", &["floor:3"]).await;
    devices(api, "acme", &["t1"], "thermostat", &[]).await;
    admin
}

#[tokio::test]
async fn desired_and_reported_merge_with_versions_times_and_delta() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let lamp = api.device_token("acme", "l1");

    // A device without state: empty documents at version 0.
    let (status, body) = send(api.get("/v1/devices/l1/state", &admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["desired"], json!({}));
    assert_eq!(body["desired_version"], 0);
    assert_eq!(body["delta"], json!({}));

    let (status, body) = send(api.merge_patch(
        "/v1/devices/l1/state/desired",
        &admin,
        &json!({"power": "on", "light": {"level": 80, "color": "warm"}}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["desired_version"], 1);
    assert_eq!(
        body["delta"],
        json!({"power": "on", "light": {"level": 80, "color": "warm"}})
    );
    assert!(body["desired_changed_at"]["power"].is_string(), "{body}");

    // The device sees it, reports half of it: the delta is what is left, deep inside.
    let (status, body) = send(api.get("/v1/device/state", &lamp)).await;
    assert_eq!(status, 200);
    assert_eq!(body["desired"]["power"], "on");
    let (status, body) = send(api.merge_patch(
        "/v1/device/state/reported",
        &lamp,
        &json!({"power": "on", "light": {"level": 80.0, "color": "cold"}, "uptime": 12}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reported_version"], 1);
    assert_eq!(body["delta"], json!({"light": {"color": "warm"}}));

    // `null` deletes; a member changed keeps its own time, others keep theirs.
    let before = body["desired_changed_at"]["power"].clone();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = send(api.merge_patch(
        "/v1/devices/l1/state/desired",
        &admin,
        &json!({"light": {"color": null}}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["desired"],
        json!({"power": "on", "light": {"level": 80}})
    );
    assert_eq!(body["desired_version"], 2);
    assert_eq!(body["desired_changed_at"]["power"], before);
    assert_ne!(body["desired_changed_at"]["light"], before);
    assert_eq!(body["delta"], json!({}));

    // A patch that changes nothing leaves the version.
    let (status, body) = send(api.merge_patch(
        "/v1/devices/l1/state/desired",
        &admin,
        &json!({"power": "on"}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["desired_version"], 2);

    // The admin's write is audited with the patch; the device's is not.
    let audited = api
        .count("SELECT count(*) FROM audit_log WHERE action = 'state.desired_patched'")
        .await;
    assert_eq!(audited, 3);
    app.stop().await;
}

#[tokio::test]
async fn merge_patches_follow_rfc_7386() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    // RFC 7386 appendix A, the cases whose document and patch are objects.
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (
            json!({"e": "x"}),
            json!({"a": 1}),
            json!({"e": "x", "a": 1}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (i, (document, patch, expected)) in cases.into_iter().enumerate() {
        let device = format!("rfc{i}");
        devices(&api, "acme", &[&device], "lamp", &[]).await;
        let path = format!("/v1/devices/{device}/state/desired");
        if document != json!({}) {
            let (status, _) = send(api.merge_patch(&path, &admin, &document)).await;
            assert_eq!(status, 200);
        }
        let (status, body) = send(api.merge_patch(&path, &admin, &patch)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["desired"], expected, "case {i}: {document} + {patch}");
        // The pure function the device library uses agrees with the server.
        let applied = toaster_core::control::state::apply(
            document.as_object().unwrap(),
            &patch,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(Value::Object(applied.document), expected, "case {i}");
    }
    app.stop().await;
}

#[tokio::test]
async fn if_match_guards_writes_and_concurrent_patches_all_survive() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let path = "/v1/devices/l1/state/desired";

    // If-Match on a device without state: version 0 is current.
    let (status, body) = send(
        api.merge_patch(path, &admin, &json!({"a": 1}))
            .header("if-match", "\"0\""),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        api.merge_patch(path, &admin, &json!({"b": 1}))
            .header("if-match", "\"0\""),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(
        body["type"],
        "https://toaster.dev/problems/precondition-failed"
    );
    // The tag of a read works too, and a weak tag never matches.
    let response = api
        .get("/v1/devices/l1/state", &admin)
        .send()
        .await
        .unwrap();
    let tag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(tag, "\"d1.r0\"");
    let (status, _) = send(
        api.merge_patch(path, &admin, &json!({"b": 1}))
            .header("if-match", &tag),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        api.merge_patch(path, &admin, &json!({"c": 1}))
            .header("if-match", "W/\"2\""),
    )
    .await;
    assert_eq!(status, 412);
    let (status, _) = send(
        api.merge_patch(path, &admin, &json!({"c": 1}))
            .header("if-match", "2"),
    )
    .await;
    assert_eq!(status, 400);

    // Concurrent writers of different members: no update is lost.
    let writers = (0..24).map(|i| {
        let request = api.merge_patch(path, &admin, &json!({ format!("k{i}"): i }));
        async move { send(request).await }
    });
    for (status, body) in futures::future::join_all(writers).await {
        assert_eq!(status, 200, "{body}");
    }
    let (_, body) = send(api.get("/v1/devices/l1/state", &admin)).await;
    let desired = body["desired"].as_object().unwrap();
    for i in 0..24 {
        assert_eq!(desired[&format!("k{i}")], i, "{body}");
    }
    assert_eq!(body["desired_version"], 2 + 24);
    app.stop().await;
}

#[tokio::test]
async fn limits_refuse_with_a_problem_and_store_nothing() {
    let extra = BTreeMap::from([
        ("state_max_bytes".to_string(), "300".to_string()),
        ("state_max_depth".to_string(), "3".to_string()),
        ("state_max_keys".to_string(), "5".to_string()),
    ]);
    let app = TestApp::start_with(Limits::default(), extra).await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let path = "/v1/devices/l1/state/desired";
    let (status, _) = send(api.merge_patch(path, &admin, &json!({"a": 1, "b": 2, "c": 3}))).await;
    assert_eq!(status, 200);

    let refused = [
        (json!([1, 2]), 422, "must be a JSON object"),
        (json!({"a": {"b": {"c": {"d": 1}}}}), 422, "state_max_depth"),
        (
            json!({"1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6}),
            422,
            "state_max_keys",
        ),
        // Each patch is within the limits, the document after it is not.
        (json!({"d": 4, "e": 5, "f": 6}), 422, "state_max_keys"),
        (json!({"d": "x".repeat(280)}), 413, "state_max_bytes"),
        (json!({"": 1}), 422, "member name"),
    ];
    for (patch, code, names) in refused {
        let (status, body) = send(api.merge_patch(path, &admin, &patch)).await;
        assert_eq!(status, code, "{patch}: {body}");
        assert!(body.to_string().contains(names), "{patch}: {body}");
    }
    let (status, body) = send(
        api.merge_patch(path, &admin, &json!({}))
            .header("content-type", "text/plain"),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = send(
        app.http()
            .patch(app.url(path))
            .bearer_auth(&admin)
            .header("content-type", "application/merge-patch+json")
            .body("{\"a\": "),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, body) = send(api.get("/v1/devices/l1/state", &admin)).await;
    assert_eq!(body["desired"], json!({"a": 1, "b": 2, "c": 3}));
    assert_eq!(body["desired_version"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_poll_with_nothing_new_is_answered_without_postgresql() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let lamp = api.device_token("acme", "l1");
    let (status, _) = send(api.merge_patch(
        "/v1/devices/l1/state/desired",
        &admin,
        &json!({"power": "on"}),
    ))
    .await;
    assert_eq!(status, 200);
    let response = api.get("/v1/device/state", &lamp).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let tag = response.headers()["etag"].to_str().unwrap().to_owned();
    let (status, body) = send(api.get("/v1/device/commands", &lamp)).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"items": []})));

    // Hold every lock on the control tables: a request that touched them would wait.
    let blocker = app.db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE device_state, commands IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let quick = |request: RequestBuilder| request.timeout(Duration::from_secs(3)).send();
    let response = quick(
        api.get("/v1/device/state", &lamp)
            .header("if-none-match", &tag),
    )
    .await
    .expect("answered while the tables are locked");
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], tag.as_str());
    let response = quick(api.get("/v1/device/commands", &lamp))
        .await
        .expect("answered while the tables are locked");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"items": []})
    );
    // A request that needs the tables does wait (the lock is real).
    assert!(quick(api.get("/v1/device/state", &lamp)).await.is_err());
    blocker.batch_execute("ROLLBACK").await.unwrap();

    // Every write moves the marker: the next poll sees the change.
    let (status, _) = send(api.merge_patch(
        "/v1/devices/l1/state/desired",
        &admin,
        &json!({"power": "off"}),
    ))
    .await;
    assert_eq!(status, 200);
    let response = api
        .get("/v1/device/state", &lamp)
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let new_tag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        response.json::<Value>().await.unwrap()["desired"]["power"],
        "off"
    );
    assert_ne!(new_tag, tag);
    let command = command(&api, &admin, "l1", json!({"name": "reboot"})).await;
    let (_, body) = send(api.get("/v1/device/commands", &lamp)).await;
    assert_eq!(body["items"][0]["id"], command["id"]);
    // The device's own report moves its tag too.
    let response = api
        .merge_patch("/v1/device/state/reported", &lamp, &json!({"power": "off"}))
        .send()
        .await
        .unwrap();
    let reported_tag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(reported_tag, new_tag);
    let response = api
        .get("/v1/device/state", &lamp)
        .header("if-none-match", &reported_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    app.stop().await;
}

#[tokio::test]
async fn commands_move_through_their_lifecycle_once() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let lamp = api.device_token("acme", "l1");
    let other = api.device_token("acme", "l2");

    let first = command(
        &api,
        &admin,
        "l1",
        json!({"name": "light.set", "parameters": {"level": 10}, "ttl_seconds": 600}),
    )
    .await;
    let second = command(&api, &admin, "l1", json!({"name": "reboot"})).await;
    assert_eq!(first["status"], "queued");
    assert_eq!(second["parameters"], json!({}));
    let id = first["id"].as_str().unwrap();

    // Oldest first, each fetched one delivered; a second fetch gives them again.
    let (status, body) = send(api.get("/v1/device/commands?limit=1", &lamp)).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["id"], first["id"]);
    assert_eq!(body["items"][0]["parameters"], json!({"level": 10}));
    let (_, body) = send(api.get("/v1/device/commands", &lamp)).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    let (_, body) = send(api.get(&format!("/v1/devices/l1/commands/{id}"), &admin)).await;
    assert_eq!(body["status"], "delivered");
    assert!(body["delivered_at"].is_string());

    // Another device cannot see or answer it.
    let result = |token: &str, cmd: &str, body: Value| {
        api.post(&format!("/v1/device/commands/{cmd}/result"), token, &body)
    };
    let (status, _) = send(result(&other, id, json!({"status": "succeeded"}))).await;
    assert_eq!(status, 404);

    // A delivered command cannot be canceled; its result is posted once.
    let (status, body) = send(api.post(
        &format!("/v1/devices/l1/commands/{id}/cancel"),
        &admin,
        &json!({}),
    ))
    .await;
    assert_eq!(status, 409, "{body}");
    let done = json!({"status": "succeeded", "output": {"level": 10, "note": "<b>ok</b>"}});
    let (status, body) = send(result(&lamp, id, done.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded");
    let (status, _) = send(result(&lamp, id, done.clone())).await;
    assert_eq!(status, 200, "the same result again is a safe resend");
    let (status, body) = send(result(&lamp, id, json!({"status": "failed"}))).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = send(result(
        &lamp,
        id,
        json!({"status": "succeeded", "output": {"level": 11}}),
    ))
    .await;
    assert_eq!(status, 409);
    let (_, body) = send(api.get(&format!("/v1/devices/l1/commands/{id}"), &admin)).await;
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["output"]["note"], "<b>ok</b>");
    assert!(body["finished_at"].is_string());

    // A queued command is canceled (twice is fine), then takes no result.
    let third = command(&api, &admin, "l2", json!({"name": "reboot"})).await;
    let third_id = third["id"].as_str().unwrap();
    let cancel = format!("/v1/devices/l2/commands/{third_id}/cancel");
    let (status, body) = send(api.post(&cancel, &admin, &json!({}))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("canceled"))
    );
    let (status, _) = send(api.post(&cancel, &admin, &json!({}))).await;
    assert_eq!(status, 200);
    let (status, body) = send(result(&other, third_id, json!({"status": "succeeded"}))).await;
    assert_eq!(status, 409, "{body}");
    let (_, body) = send(api.get("/v1/device/commands", &other)).await;
    assert_eq!(body, json!({"items": []}));

    // The list, newest first, by status; audit entries for sends and cancels.
    let (_, body) = send(api.get("/v1/devices/l1/commands", &admin)).await;
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second["id"].as_str().unwrap(), id]);
    let (_, body) = send(api.get("/v1/devices/l1/commands?status=succeeded", &admin)).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.count("SELECT count(*) FROM audit_log WHERE action = 'command.sent'")
            .await,
        3
    );
    assert_eq!(
        api.count("SELECT count(*) FROM audit_log WHERE action = 'command.canceled'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn commands_expire_and_retention_removes_finished_ones() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let lamp = api.device_token("acme", "l1");
    let command = command(
        &api,
        &admin,
        "l1",
        json!({"name": "reboot", "ttl_seconds": 1}),
    )
    .await;
    let id = command["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (_, body) = send(api.get(&format!("/v1/devices/l1/commands/{id}"), &admin)).await;
    assert_eq!(body["status"], "expired");
    assert_eq!(body["finished_at"], body["expires_at"]);
    let (_, body) = send(api.get("/v1/device/commands", &lamp)).await;
    assert_eq!(body, json!({"items": []}));
    let (status, body) = send(api.post(
        &format!("/v1/device/commands/{id}/result"),
        &lamp,
        &json!({"status": "succeeded"}),
    ))
    .await;
    assert_eq!(status, 409, "{body}");

    // The retention run stores the expiry, then deletes what finished long enough ago.
    let client = app.db.client().await;
    let row = client
        .query_one("SELECT * FROM control_retention_run(86400, NULL)", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 0));
    let row = client
        .query_one("SELECT * FROM control_retention_run(0, NULL)", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (0, 1));
    assert_eq!(api.count("SELECT count(*) FROM commands").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn idempotency_keys_and_the_queue_cap() {
    let extra = BTreeMap::from([("command_queue_limit".to_string(), "3".to_string())]);
    let app = TestApp::start_with(Limits::default(), extra).await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let keyed = |body: Value, key: &str| {
        api.post("/v1/devices/l1/commands", &admin, &body)
            .header("idempotency-key", key)
    };
    let (status, first) = send(keyed(json!({"name": "reboot"}), "k-1")).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = send(keyed(json!({"name": "reboot"}), "k-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    let (status, body) = send(keyed(json!({"name": "shutdown"}), "k-1")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(api.count("SELECT count(*) FROM commands").await, 1);

    command(&api, &admin, "l1", json!({"name": "a"})).await;
    command(&api, &admin, "l1", json!({"name": "b"})).await;
    let response = api
        .post("/v1/devices/l1/commands", &admin, &json!({"name": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("command_queue_limit"),
        "{body}"
    );
    // A finished command frees its place.
    let lamp = api.device_token("acme", "l1");
    let (status, _) = send(api.post(
        &format!(
            "/v1/device/commands/{}/result",
            first["id"].as_str().unwrap()
        ),
        &lamp,
        &json!({"status": "rejected"}),
    ))
    .await;
    assert_eq!(status, 200);
    command(&api, &admin, "l1", json!({"name": "c"})).await;
    app.stop().await;
}

#[tokio::test]
async fn fleet_writes_reach_the_devices_a_selector_names() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    api.sql(
        "UPDATE devices SET status = 'decommissioned' WHERE device_id = 'l2'",
        &[],
    )
    .await;
    devices(&api, "acme", &["l3"], "lamp", &["floor:3"]).await;

    let (status, body) =
        send(api.merge_patch("/v1/fleet/state/desired", &admin, &json!({"power": "off"}))).await;
    assert_eq!(status, 400, "a selector is required: {body}");
    let (status, body) = send(api.merge_patch(
        "/v1/fleet/state/desired?tag=floor:3",
        &admin,
        &json!({"power": "off"}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["devices"], 2,
        "l1 and l3; l2 is decommissioned: {body}"
    );
    for (device, expected) in [
        ("l1", json!({"power": "off"})),
        ("l3", json!({"power": "off"})),
        ("t1", json!({})),
    ] {
        let (_, body) = send(api.get(&format!("/v1/devices/{device}/state"), &admin)).await;
        assert_eq!(body["desired"], expected, "{device}");
    }
    let (status, body) = send(api.merge_patch(
        "/v1/fleet/state/desired?all=true",
        &admin,
        &json!({"tz": "UTC"}),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["devices"], 3);

    let (status, body) = send(api.post(
        "/v1/fleet/commands?model=lamp",
        &admin,
        &json!({"name": "blink", "parameters": {"times": 3}}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["devices"].as_i64(), body["queued"].as_i64()),
        (Some(2), Some(2))
    );
    let batch = body["batch_id"].as_str().unwrap().to_owned();
    let lamp = api.device_token("acme", "l3");
    let (_, inbox) = send(api.get("/v1/device/commands", &lamp)).await;
    assert_eq!(inbox["items"][0]["name"], "blink");
    let cmd = inbox["items"][0]["id"].as_str().unwrap();
    let (status, _) = send(api.post(
        &format!("/v1/device/commands/{cmd}/result"),
        &lamp,
        &json!({"status": "succeeded"}),
    ))
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(api.get(&format!("/v1/fleet/commands/{batch}"), &admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["commands"], 2);
    assert_eq!(body["statuses"], json!({"queued": 1, "succeeded": 1}));

    // Retried with its key, a fleet send queues nothing new and names its batch.
    let keyed = || {
        api.post(
            "/v1/fleet/commands?model=thermostat",
            &admin,
            &json!({"name": "calibrate"}),
        )
        .header("idempotency-key", "cal-1")
    };
    let (status, first) = send(keyed()).await;
    assert_eq!(status, 201);
    let (status, again) = send(keyed()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["queued"].as_i64(), &again["batch_id"]),
        (Some(0), &first["batch_id"])
    );
    assert_eq!(
        api.count("SELECT count(*) FROM commands WHERE name = 'calibrate'")
            .await,
        1
    );
    assert_eq!(api.count("SELECT count(*) FROM audit_log WHERE action IN ('state.desired_patched_fleet', 'command.sent_fleet')").await, 5);
    app.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated_and_erasure_removes_state_and_commands() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let intruder = api.tenant("evil").await;
    command(&api, &admin, "l1", json!({"name": "reboot"})).await;
    let (status, _) = send(api.merge_patch(
        "/v1/devices/l1/state/desired",
        &admin,
        &json!({"power": "on"}),
    ))
    .await;
    assert_eq!(status, 200);
    let lamp = api.device_token("acme", "l1");
    let (status, _) = send(api.get("/v1/device/state", &lamp)).await;
    assert_eq!(status, 200);

    for (method, path) in [
        ("GET", "/v1/devices/l1/state"),
        ("PATCH", "/v1/devices/l1/state/desired"),
        ("GET", "/v1/devices/l1/commands"),
        ("POST", "/v1/devices/l1/commands"),
    ] {
        let request = match method {
            "GET" => api.get(path, &intruder),
            "PATCH" => api.merge_patch(path, &intruder, &json!({"power": "off"})),
            _ => api.post(path, &intruder, &json!({"name": "reboot"})),
        };
        let (status, body) = send(request).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    // A device token is not an admin's, and an admin's is not a device's.
    let (status, _) = send(api.get("/v1/devices/l1/state", &lamp)).await;
    assert_eq!(status, 403);
    let (status, _) = send(api.get("/v1/device/state", &admin)).await;
    assert_eq!(status, 403);

    // A disabled device is refused here too.
    let (status, body) = send(
        app.http()
            .patch(app.url("/v1/devices/l2"))
            .bearer_auth(&admin)
            .json(&json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(api.get("/v1/device/state", &api.device_token("acme", "l2"))).await;
    assert_eq!(status, 401);

    let response = app
        .http()
        .delete(app.url("/v1/devices/l1?erase=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        api.count("SELECT count(*) FROM device_state WHERE device_id = 'l1'")
            .await,
        0
    );
    assert_eq!(
        api.count("SELECT count(*) FROM commands WHERE device_id = 'l1'")
            .await,
        0
    );
    assert!(app.host.kv().get("default", "control:acme:l1").is_none());
    // Nothing can be sent to it any more.
    let (status, body) = send(api.post(
        "/v1/devices/l1/commands",
        &admin,
        &json!({"name": "reboot"}),
    ))
    .await;
    assert_eq!(status, 409, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_problem_that_names_it() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = fleet(&api).await;
    let lamp = api.device_token("acme", "l1");
    let cases = [
        (json!({"name": "Reboot"}), 422, "/name"),
        (json!({"name": "x".repeat(65)}), 422, "/name"),
        (json!({"name": "reboot; DROP TABLE commands"}), 422, "/name"),
        (
            json!({"name": "reboot", "ttl_seconds": 0}),
            422,
            "/ttl_seconds",
        ),
        (
            json!({"name": "reboot", "ttl_seconds": 2_592_001}),
            422,
            "/ttl_seconds",
        ),
        (
            json!({"name": "reboot", "parameters": [1]}),
            422,
            "/parameters",
        ),
        (
            json!({"name": "reboot", "parameters": {"blob": "x".repeat(17_000)}}),
            413,
            "command_max_bytes",
        ),
        (json!({"name": "reboot", "extra": 1}), 422, "extra"),
    ];
    for (body, code, names) in cases {
        let (status, answer) = send(api.post("/v1/devices/l1/commands", &admin, &body)).await;
        assert_eq!(status, code, "{body}: {answer}");
        assert!(answer.to_string().contains(names), "{body}: {answer}");
    }
    let (status, _) = send(api.post(
        "/v1/devices/nope/commands",
        &admin,
        &json!({"name": "reboot"}),
    ))
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(api.get("/v1/devices/l1/commands/cmd_zz", &admin)).await;
    assert_eq!(status, 404);
    let (status, _) = send(api.get("/v1/fleet/commands/cb_0000000000000000", &admin)).await;
    assert_eq!(status, 404);
    let (status, _) = send(api.post(
        "/v1/device/commands/cmd_0000000000000000/result",
        &lamp,
        &json!({"status": "queued"}),
    ))
    .await;
    assert_eq!(status, 422);
    let (status, _) = send(api.get("/v1/device/commands?limit=0", &lamp)).await;
    assert_eq!(status, 400);
    assert_eq!(api.count("SELECT count(*) FROM commands").await, 0);

    // Hostile strings are data: stored and returned as JSON, never interpreted.
    let payload = json!({"label": "<script>alert(1)</script>", "q": "'; DROP TABLE devices; --"});
    let (status, body) =
        send(api.merge_patch("/v1/devices/l1/state/desired", &admin, &payload)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["desired"], payload);

    // The routes: auth keeps the registry, control answers state with 405 + Allow.
    let (status, body) = send(api.get("/v1/devices/l1", &admin)).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("l1")));
    let response = app
        .http()
        .put(app.url("/v1/devices/l1/state"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    app.stop().await;
}

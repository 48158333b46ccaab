//! The endpoints an administrator's tools need, end to end: the tenant list, claim
//! tokens listed and revoked, and operator and admin access tokens listed and revoked
//! by id (the real `auth` component, and the other components checking the same
//! revocation list, against a fresh database).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::AccessClaims;
use toaster_tests::{TestApp, TestKv};

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

struct Api<'a> {
    app: &'a TestApp,
}

impl Api<'_> {
    fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.app.http().get(self.app.url(path)).bearer_auth(token)
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.app
            .http()
            .post(self.app.url(path))
            .bearer_auth(token)
            .json(body)
    }

    fn delete(&self, path: &str, token: &str) -> RequestBuilder {
        self.app
            .http()
            .delete(self.app.url(path))
            .bearer_auth(token)
    }

    async fn create_tenant(&self, operator: &str, id: &str) {
        let (status, body) = send(self.post(
            "/v1/tenants",
            operator,
            &json!({"id": id, "name": format!("Tenant {id}")}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
    }

    /// An admin token minted through the API: its token and its id.
    async fn mint_admin(&self, operator: &str, tenant: &str, subject: &str) -> (String, String) {
        let (status, body) = send(self.post(
            &format!("/v1/tenants/{tenant}/tokens"),
            operator,
            &json!({"subject": subject, "ttl_secs": 600}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["token_id"].as_str().unwrap().to_owned(),
        )
    }

    async fn claim(&self, admin: &str, quota: u32) -> Value {
        let (status, claim) = send(self.post(
            "/v1/claims",
            admin,
            &json!({"model": "t1000", "quota": quota, "expires_in_secs": 3600}),
        ))
        .await;
        assert_eq!(status, 201, "{claim}");
        claim
    }

    async fn provision(&self, claim_token: &str, device: &str) -> (StatusCode, Value) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        send(self.app.http().post(self.app.url("/v1/provision")).json(&json!({
            "claim_token": claim_token, "device_id": device, "public_key": key.public_key_pem(),
        })))
        .await
    }

    async fn audit_actions(&self, admin: &str) -> Vec<String> {
        let (status, audit) = send(self.get("/v1/audit?limit=500", admin)).await;
        assert_eq!(status, 200, "{audit}");
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes a value into the server's key-value store behind its back.
fn kv_set(app: &TestApp, key: &str, value: &Value) {
    let bytes = serde_json::to_vec(value).unwrap();
    match app.host.kv() {
        TestKv::Host(kv) => kv.set("default", key, &bytes).expect("key-value set"),
        TestKv::Spin(path) => {
            let conn = rusqlite::Connection::open(path).expect("open Spin's store");
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.execute(
                "INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2) \
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                rusqlite::params![key, bytes],
            )
            .expect("set");
        }
    }
}

// ---------------------------------------------------------------- tenants

#[tokio::test]
async fn operators_list_and_read_tenants_with_a_checked_cursor() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let operator = app.operator_token();
    for id in ["acme", "globex", "initech"] {
        api.create_tenant(&operator, id).await;
    }

    let (status, page) = send(api.get("/v1/tenants?limit=2", &operator)).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex"]);
    assert_eq!(page["items"][0]["name"], "Tenant acme");
    assert!(
        page["items"][0]["created_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    assert_ne!(cursor, "globex", "the cursor is not the bare id");
    let (status, rest) = send(api.get(&format!("/v1/tenants?cursor={cursor}"), &operator)).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["id"], "initech");
    assert_eq!(rest["next_cursor"], Value::Null);

    for path in [
        "/v1/tenants?cursor=zzzz",
        "/v1/tenants?cursor=globex",
        "/v1/tenants?limit=0",
        "/v1/tenants?name=acme",
    ] {
        let (status, problem) = send(api.get(path, &operator)).await;
        assert_eq!(status, 400, "{path}: {problem}");
    }

    let (status, tenant) = send(api.get("/v1/tenants/globex", &operator)).await;
    assert_eq!(status, 200, "{tenant}");
    assert_eq!(tenant["id"], "globex");
    for path in ["/v1/tenants/nobody", "/v1/tenants/NOT%20AN%20ID"] {
        let (status, problem) = send(api.get(path, &operator)).await;
        assert_eq!(status, 404, "{path}: {problem}");
        assert_eq!(problem["status"], 404);
    }

    // Admins and devices are not operators.
    let admin = app.admin_token("acme");
    for path in ["/v1/tenants", "/v1/tenants/acme"] {
        let (status, problem) = send(api.get(path, &admin)).await;
        assert_eq!(status, 403, "{path}: {problem}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------- claims

#[tokio::test]
async fn claims_are_listed_without_their_token_and_a_revoked_claim_cannot_provision() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let operator = app.operator_token();
    api.create_tenant(&operator, "acme").await;
    api.create_tenant(&operator, "globex").await;
    let (admin, _) = api.mint_admin(&operator, "acme", "alice").await;
    let (other, _) = api.mint_admin(&operator, "globex", "bob").await;

    let first = api.claim(&admin, 5).await;
    let second = api.claim(&admin, 1).await;
    let claim_token = first["claim_token"].as_str().unwrap();
    let (status, _) = api.provision(claim_token, "d1").await;
    assert_eq!(status, 201);

    let (status, page) = send(api.get("/v1/claims", &admin)).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], second["id"], "newest first");
    assert_eq!(items[1]["id"], first["id"]);
    assert_eq!(items[1]["used"], 1);
    assert_eq!(items[1]["quota"], 5);
    assert_eq!(items[1]["status"], "active");
    assert_eq!(items[1]["revoked_at"], Value::Null);
    assert_eq!(items[1]["created_by"], "alice");
    let text = page.to_string();
    assert!(!text.contains("tclaim_"), "no token in a list: {text}");
    assert!(items[0].get("claim_token").is_none());

    // Paged one at a time, then the same two.
    let (_, one) = send(api.get("/v1/claims?limit=1", &admin)).await;
    let cursor = one["next_cursor"].as_str().unwrap();
    let (status, two) = send(api.get(&format!("/v1/claims?limit=1&cursor={cursor}"), &admin)).await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(two["items"][0]["id"], first["id"]);
    assert_eq!(two["next_cursor"], Value::Null);
    for path in [
        "/v1/claims?cursor=zzzz",
        "/v1/claims?cursor=clm_0123456789abcdef",
        "/v1/claims?status=gone",
    ] {
        let (status, problem) = send(api.get(path, &admin)).await;
        assert_eq!(status, 400, "{path}: {problem}");
    }

    let path = format!("/v1/claims/{}", first["id"].as_str().unwrap());
    let (status, claim) = send(api.get(&path, &admin)).await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["model"], "t1000");
    assert!(claim.get("claim_token").is_none());
    // Another tenant's claim is not found, for reading and revoking alike.
    assert_eq!(send(api.get(&path, &other)).await.0, 404);
    assert_eq!(send(api.delete(&path, &other)).await.0, 404);
    assert_eq!(
        send(api.get("/v1/claims/clm_0000000000000000", &admin))
            .await
            .0,
        404
    );
    assert_eq!(send(api.get("/v1/claims/zzzz", &admin)).await.0, 404);
    assert_eq!(send(api.get("/v1/claims", &operator)).await.0, 403);

    // Revoked: the next provisioning is refused like an expired claim's.
    let (status, _) = send(api.delete(&path, &admin)).await;
    assert_eq!(status, 204);
    let (status, problem) = api.provision(claim_token, "d2").await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(
        problem["detail"],
        "the claim token is invalid, expired, revoked or used up"
    );
    // Idempotent; the device it provisioned stays.
    assert_eq!(send(api.delete(&path, &admin)).await.0, 204);
    let (status, device) = send(api.get("/v1/devices/d1", &admin)).await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["status"], "active");

    let (_, claim) = send(api.get(&path, &admin)).await;
    assert_eq!(claim["status"], "revoked");
    assert!(claim["revoked_at"].is_string());
    let (_, revoked) = send(api.get("/v1/claims?status=revoked", &admin)).await;
    assert_eq!(revoked["items"].as_array().unwrap().len(), 1);
    let (_, active) = send(api.get("/v1/claims?status=active", &admin)).await;
    assert_eq!(active["items"][0]["id"], second["id"]);

    let actions = api.audit_actions(&admin).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "claim.revoked").count(),
        1,
        "{actions:?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------- access tokens

/// A token revoked by id is 401 on its next call to any component; the revocation
/// holds when the cached list is lost or stale, since PostgreSQL is the truth.
#[tokio::test]
async fn a_revoked_admin_token_is_refused_on_its_next_call_in_every_component() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let operator = app.operator_token();
    api.create_tenant(&operator, "acme").await;
    let (alice, alice_id) = api.mint_admin(&operator, "acme", "alice").await;
    let (bob, bob_id) = api.mint_admin(&operator, "acme", "bob").await;
    assert_ne!(alice_id, bob_id);

    // The token knows its id; the list names both, never the token.
    let (status, me) = send(api.get("/v1/auth/me", &alice)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["token_id"], alice_id);
    let (status, list) = send(api.get("/v1/auth/tokens", &alice)).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [bob_id.as_str(), alice_id.as_str()], "newest first");
    assert_eq!(list["items"][1]["subject"], "alice");
    assert_eq!(list["items"][1]["role"], "admin");
    assert_eq!(list["items"][1]["tenant_id"], "acme");
    assert_eq!(list["items"][1]["created_by"], "test");
    assert_eq!(list["items"][1]["revoked_at"], Value::Null);
    assert!(!list.to_string().contains(&alice), "no token in a list");

    // Every component accepts it before…
    for path in ["/v1/auth/me", "/v1/ota/firmware", "/v1/metrics/retention"] {
        assert_eq!(send(api.get(path, &alice)).await.0, 200, "{path}");
    }
    let (status, _) = send(api.delete(&format!("/v1/auth/tokens/{alice_id}"), &operator)).await;
    assert_eq!(status, 204);
    // …and refuses it on its next call, in every component; 401 even where its role
    // would be 403.
    for path in [
        "/v1/auth/me",
        "/v1/devices",
        "/v1/ota/firmware",
        "/v1/metrics/retention",
        "/v1/tenants",
    ] {
        let (status, problem) = send(api.get(path, &alice)).await;
        assert_eq!(status, 401, "{path}: {problem}");
        assert_eq!(problem["detail"], "invalid or expired access token");
    }
    // Bob's token of the same tenant is untouched.
    assert_eq!(send(api.get("/v1/devices", &bob)).await.0, 200);

    // The cached list is what the check reads; PostgreSQL is the truth behind it.
    let key = "revoked:tenant:acme";
    let cached = app.host.kv().get_json("default", key).expect("cached list");
    assert_eq!(cached["ids"], json!([alice_id]));
    app.host.kv().delete("default", key);
    assert_eq!(send(api.get("/v1/auth/me", &alice)).await.0, 401, "lost");
    let old_ms = (now_secs() as i64 - 120) * 1000;
    kv_set(&app, key, &json!({"ids": [], "checked_ms": old_ms}));
    assert_eq!(send(api.get("/v1/auth/me", &alice)).await.0, 401, "stale");
    assert_eq!(send(api.get("/v1/auth/me", &bob)).await.0, 200);

    // Listed as revoked, by whom; audited once however often it is revoked.
    assert_eq!(
        send(api.delete(&format!("/v1/auth/tokens/{alice_id}"), &operator))
            .await
            .0,
        204
    );
    let (_, list) = send(api.get("/v1/auth/tokens", &bob)).await;
    let alice_row = &list["items"][1];
    assert_eq!(alice_row["id"], alice_id);
    assert!(alice_row["revoked_at"].is_string(), "{alice_row}");
    assert_eq!(alice_row["revoked_by"], "test");
    let actions = api.audit_actions(&bob).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "token.revoked").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "token.minted").count(),
        2,
        "{actions:?}"
    );

    // An admin may revoke its own token (signing out).
    assert_eq!(
        send(api.delete(&format!("/v1/auth/tokens/{bob_id}"), &bob))
            .await
            .0,
        204
    );
    assert_eq!(send(api.get("/v1/auth/me", &bob)).await.0, 401);
    app.stop().await;
}

#[tokio::test]
async fn admins_revoke_only_their_own_tenants_tokens() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let operator = app.operator_token();
    api.create_tenant(&operator, "acme").await;
    api.create_tenant(&operator, "globex").await;
    let (acme, acme_id) = api.mint_admin(&operator, "acme", "alice").await;
    let (globex, globex_id) = api.mint_admin(&operator, "globex", "bob").await;

    // Another tenant's token, by id or presented: 404 and 403, and nothing changes.
    let (status, problem) = send(api.delete(&format!("/v1/auth/tokens/{globex_id}"), &acme)).await;
    assert_eq!(status, 404, "{problem}");
    let (status, problem) =
        send(api.post("/v1/auth/revoke", &acme, &json!({"token": globex}))).await;
    assert_eq!(status, 403, "{problem}");
    let (status, problem) =
        send(api.post("/v1/auth/revoke", &acme, &json!({"token": operator}))).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(send(api.get("/v1/devices", &globex)).await.0, 200);
    assert_eq!(send(api.get("/v1/tenants", &operator)).await.0, 200);
    // The lists keep to the tenant, whatever is asked.
    let (_, list) = send(api.get("/v1/auth/tokens?tenant=globex", &acme)).await;
    assert_eq!(list["items"], json!([]));
    let (_, list) = send(api.get("/v1/auth/tokens", &acme)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], acme_id);
    // The operator sees both, and filters.
    let (_, list) = send(api.get("/v1/auth/tokens", &operator)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, list) = send(api.get("/v1/auth/tokens?tenant=globex", &operator)).await;
    assert_eq!(list["items"][0]["id"], globex_id);

    // Unknown or malformed ids, and bad requests, are 4xx.
    for path in [
        "/v1/auth/tokens/tok_0123456789abcdef0123456789abcdef",
        "/v1/auth/tokens/zzzz",
    ] {
        let (status, problem) = send(api.delete(path, &operator)).await;
        assert_eq!(status, 404, "{path}: {problem}");
    }
    for path in [
        "/v1/auth/tokens?cursor=zzzz",
        "/v1/auth/tokens?role=device",
        "/v1/auth/tokens?expired=yes",
    ] {
        let (status, problem) = send(api.get(path, &operator)).await;
        assert_eq!(status, 400, "{path}: {problem}");
    }
    for (body, pointer) in [
        (json!({"token": "not.a.token"}), "/token"),
        (json!({"token": ""}), "/token"),
        (json!({}), ""),
        (json!({"token": acme, "extra": 1}), ""),
    ] {
        let (status, problem) = send(api.post("/v1/auth/revoke", &operator, &body)).await;
        assert!(status == 422 || status == 400, "{body}: {status} {problem}");
        if status == 422 && pointer == "/token" {
            assert_eq!(problem["errors"][0]["pointer"], "/token", "{problem}");
        }
    }
    let signer = &app.signer;
    let device_token = signer
        .mint(
            &AccessClaims::device(
                TenantId::parse("acme").unwrap(),
                &DeviceId::parse("d1").unwrap(),
                1,
            ),
            Duration::from_secs(600),
        )
        .unwrap();
    let (status, problem) = send(api.post(
        "/v1/auth/revoke",
        &operator,
        &json!({"token": device_token}),
    ))
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("device"),
        "{problem}"
    );
    // Devices may not list or revoke tokens.
    assert_eq!(send(api.get("/v1/auth/tokens", &device_token)).await.0, 403);
    app.stop().await;
}

/// Tokens minted offline (`toaster token`, `toaster up`) are not recorded: their
/// holder revokes one by presenting it.
#[tokio::test]
async fn a_token_minted_offline_is_revoked_by_presenting_it() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let operator = app.operator_token();
    let leaked = app.operator_token();
    api.create_tenant(&operator, "acme").await;
    let offline_admin = app.admin_token("acme");
    let (_, me) = send(api.get("/v1/auth/me", &leaked)).await;
    let leaked_id = me["token_id"].as_str().unwrap().to_owned();

    // Not recorded, so not revocable by id.
    let (status, problem) =
        send(api.delete(&format!("/v1/auth/tokens/{leaked_id}"), &operator)).await;
    assert_eq!(status, 404, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("/v1/auth/revoke")
    );

    let (status, problem) =
        send(api.post("/v1/auth/revoke", &operator, &json!({"token": leaked}))).await;
    assert_eq!(status, 204, "{problem}");
    let (status, _) = send(api.get("/v1/tenants", &leaked)).await;
    assert_eq!(status, 401);
    assert_eq!(send(api.get("/v1/tenants", &operator)).await.0, 200);
    // Again: nothing new.
    let (status, _) = send(api.post("/v1/auth/revoke", &operator, &json!({"token": leaked}))).await;
    assert_eq!(status, 204);
    let (_, list) = send(api.get("/v1/auth/tokens?role=operator", &operator)).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], leaked_id);
    assert_eq!(items[0]["tenant_id"], Value::Null);
    assert_eq!(items[0]["created_at"], Value::Null, "not minted by the API");
    assert!(items[0]["revoked_at"].is_string());

    // An admin presents its own offline token: refused from then on, audited.
    let (status, _) = send(api.post(
        "/v1/auth/revoke",
        &offline_admin,
        &json!({"token": offline_admin}),
    ))
    .await;
    assert_eq!(status, 204);
    assert_eq!(send(api.get("/v1/devices", &offline_admin)).await.0, 401);
    let (admin, _) = api.mint_admin(&operator, "acme", "alice").await;
    let actions: BTreeSet<String> = api.audit_actions(&admin).await.into_iter().collect();
    assert!(actions.contains("token.revoked"), "{actions:?}");

    // An expired token needs nothing: 204, nothing recorded.
    let expired = app
        .signer
        .mint_at(
            &AccessClaims::admin(TenantId::parse("acme").unwrap(), "old"),
            Duration::from_secs(60),
            now_secs() - 3600,
        )
        .unwrap();
    let (status, _) =
        send(api.post("/v1/auth/revoke", &operator, &json!({"token": expired}))).await;
    assert_eq!(status, 204);
    let (_, list) = send(api.get(
        "/v1/auth/tokens?include_expired=true&tenant=acme",
        &operator,
    ))
    .await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["subject"] != "old"),
        "{list}"
    );
    app.stop().await;
}

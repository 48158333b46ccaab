//! Identity, end to end: the real `auth` component in the host against a fresh
//! database. Device keys are generated here (rcgen) and assertions signed here
//! (rustls' ring signers), exactly as a device would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::{RequestBuilder, StatusCode};
use rustls::SignatureScheme;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;
use serde_json::{Value, json};
use toaster_host::Limits;
use toaster_tests::{TestApp, serve_app};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

// ---------------------------------------------------------------- device keys

/// A device's key pair: the public key as SPKI PEM, and a signer for assertions.
struct DeviceKey {
    public_pem: String,
    signer: Arc<dyn SigningKey>,
    alg: &'static str,
}

impl DeviceKey {
    fn es256() -> DeviceKey {
        Self::generate(&rcgen::PKCS_ECDSA_P256_SHA256, "ES256")
    }

    fn ed25519() -> DeviceKey {
        Self::generate(&rcgen::PKCS_ED25519, "EdDSA")
    }

    fn generate(alg: &'static rcgen::SignatureAlgorithm, jws_alg: &'static str) -> DeviceKey {
        let pair = rcgen::KeyPair::generate_for(alg).expect("key generation");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).expect("signer");
        DeviceKey {
            public_pem: pair.public_key_pem(),
            signer,
            alg: jws_alg,
        }
    }

    /// A compact JWS of `claims` with this key, `alg` as given in the header.
    fn sign_with_alg(&self, alg: &str, claims: &Value) -> String {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        let payload = b64(claims.to_string().as_bytes());
        let input = format!("{header}.{payload}");
        let scheme = match self.alg {
            "ES256" => SignatureScheme::ECDSA_NISTP256_SHA256,
            _ => SignatureScheme::ED25519,
        };
        let signer = self.signer.choose_scheme(&[scheme]).expect("scheme");
        let signature = signer.sign(input.as_bytes()).expect("sign");
        let signature = match self.alg {
            // JWS wants r || s, rustls gives ASN.1 DER.
            "ES256" => der_to_raw_p256(&signature),
            _ => signature,
        };
        format!("{input}.{}", b64(&signature))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_alg(self.alg, claims)
    }
}

/// ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } → 64 bytes.
fn der_to_raw_p256(der: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(bytes[0], 0x02, "INTEGER");
        let len = bytes[1] as usize;
        (&bytes[2..2 + len], &bytes[2 + len..])
    }
    assert_eq!(der[0], 0x30, "SEQUENCE");
    let body = &der[2..];
    let (r, rest) = integer(body);
    let (s, _) = integer(rest);
    let mut out = vec![0u8; 64];
    for (value, at) in [(r, 0), (s, 32)] {
        let value = &value[value.len().saturating_sub(32)..];
        out[at + 32 - value.len()..at + 32].copy_from_slice(value);
    }
    out
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jti() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn claims(tenant: &str, device: &str) -> Value {
    let now = now();
    json!({"iss": tenant, "sub": device, "aud": "toaster", "iat": now, "exp": now + 300, "jti": jti()})
}

// ---------------------------------------------------------------- HTTP helpers

/// `application/x-www-form-urlencoded`, as an OAuth client sends it.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

struct Api<'a> {
    app: &'a TestApp,
}

impl<'a> Api<'a> {
    fn post(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.app
            .http()
            .post(self.app.url(path))
            .bearer_auth(token)
            .json(body)
    }

    fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.app.http().get(self.app.url(path)).bearer_auth(token)
    }

    fn patch(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.app
            .http()
            .patch(self.app.url(path))
            .bearer_auth(token)
            .json(body)
    }

    fn delete(&self, path: &str, token: &str) -> RequestBuilder {
        self.app
            .http()
            .delete(self.app.url(path))
            .bearer_auth(token)
    }

    /// Creates a tenant through the API and returns an admin token minted by the API.
    async fn tenant(&self, id: &str) -> String {
        let operator = self.app.operator_token();
        let (status, body) = send(self.post(
            "/v1/tenants",
            &operator,
            &json!({"id": id, "name": format!("Tenant {id}")}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = send(self.post(
            &format!("/v1/tenants/{id}/tokens"),
            &operator,
            &json!({"subject": "alice@example.com", "ttl_secs": 600}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn register(&self, admin: &str, id: &str, key: &DeviceKey) {
        let (status, body) = send(self.post(
            "/v1/devices",
            admin,
            &json!({"id": id, "model": "t1000", "channel": "stable", "tags": ["site=berlin"], "public_key": key.public_pem}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
    }

    async fn exchange(&self, assertion: &str) -> (StatusCode, Value) {
        send(
            self.app
                .http()
                .post(self.app.url("/v1/auth/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[("grant_type", GRANT), ("assertion", assertion)])),
        )
        .await
    }

    async fn login(&self, tenant: &str, device: &str, key: &DeviceKey) -> String {
        let (status, body) = self.exchange(&key.sign(&claims(tenant, device))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn me(&self, token: &str) -> (StatusCode, Value) {
        send(self.get("/v1/auth/me", token)).await
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db
        .client()
        .await
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn tenant_admin_claim_provision_login_and_an_authorized_call() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;

    let (status, claim) = send(api.post(
        "/v1/claims",
        &admin,
        &json!({"model": "t1000", "quota": 5, "expires_in_secs": 3600, "tags": ["batch=7"]}),
    ))
    .await;
    assert_eq!(status, 201, "{claim}");
    let claim_token = claim["claim_token"].as_str().unwrap();
    assert!(claim_token.starts_with("tclaim_"));
    assert_eq!(claim["used"], 0);

    // The device, with no credential but the claim token.
    let key = DeviceKey::es256();
    let (status, provisioned) = send(app.http().post(app.url("/v1/provision")).json(&json!({
        "claim_token": claim_token, "device_id": "toaster-0001", "public_key": key.public_pem,
    })))
    .await;
    assert_eq!(status, 201, "{provisioned}");
    assert_eq!(provisioned["tenant_id"], "acme");
    assert_eq!(provisioned["model"], "t1000");
    assert_eq!(provisioned["tags"], json!(["batch=7"]));

    let token = api.login("acme", "toaster-0001", &key).await;
    let (status, me) = api.me(&token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["role"], "device");
    assert_eq!(me["tenant_id"], "acme");
    assert_eq!(me["subject"], "toaster-0001");
    assert_eq!(me["key_generation"], 1);

    // The admin sees it, with its key and the claim it came from.
    let (status, device) = send(api.get("/v1/devices/toaster-0001", &admin)).await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["status"], "active");
    assert_eq!(device["claim_id"], claim["id"]);
    assert_eq!(device["keys"][0]["state"], "current");
    assert_eq!(device["keys"][0]["algorithm"], "ES256");
    assert_eq!(device["last_seen"], Value::Null);

    // The claim token is stored only as its hash.
    let stored = count(
        &app,
        &format!(
            "SELECT count(*) FROM claims WHERE used = 1 AND token_hash = sha256('{claim_token}'::bytea)"
        ),
    )
    .await;
    assert_eq!(stored, 1);
    let plain = count(
        &app,
        &format!(
            "SELECT count(*) FROM claims WHERE position('{claim_token}' in row(claims.*)::text) > 0"
        ),
    )
    .await;
    assert_eq!(plain, 0);

    // An Ed25519 device registered by the admin logs in too.
    let ed = DeviceKey::ed25519();
    api.register(&admin, "aa:bb:cc:dd", &ed).await;
    let token = api.login("acme", "aa:bb:cc:dd", &ed).await;
    assert_eq!(api.me(&token).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn every_login_refusal_is_the_same_401() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::es256();
    api.register(&admin, "d1", &key).await;
    let disabled_key = DeviceKey::ed25519();
    api.register(&admin, "d2", &disabled_key).await;
    let (status, _) =
        send(api.patch("/v1/devices/d2", &admin, &json!({"status": "disabled"}))).await;
    assert_eq!(status, 200);

    let now = now();
    let base = claims("acme", "d1");
    let with = |changes: Value| {
        let mut c = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c["jti"] = json!(jti());
        c
    };
    let other_key = DeviceKey::es256();
    let replayed = key.sign(&with(json!({})));
    assert_eq!(api.exchange(&replayed).await.0, 200, "first use");

    let cases: Vec<(&str, String)> = vec![
        ("unknown device", key.sign(&with(json!({"sub": "nobody"})))),
        ("unknown tenant", key.sign(&with(json!({"iss": "nope"})))),
        ("disabled device", disabled_key.sign(&claims("acme", "d2"))),
        ("another key's signature", other_key.sign(&with(json!({})))),
        ("alg none", {
            let c = with(json!({}));
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(c.to_string().as_bytes())
            )
        }),
        ("HS256", {
            let signed = key.sign(&with(json!({})));
            let mut parts: Vec<&str> = signed.split('.').collect();
            let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
            parts[0] = &header;
            parts.join(".")
        }),
        (
            "HS512 header on a real signature",
            key.sign_with_alg("HS512", &with(json!({}))),
        ),
        (
            "expired",
            key.sign(&with(json!({"iat": now - 1000, "exp": now - 600}))),
        ),
        (
            "not yet valid",
            key.sign(&with(json!({"iat": now + 600, "exp": now + 900}))),
        ),
        (
            "lifetime over an hour",
            key.sign(&with(json!({"iat": now, "exp": now + 3601}))),
        ),
        ("jti replayed", replayed),
        ("wrong aud", key.sign(&with(json!({"aud": "someone-else"})))),
        ("no jti", {
            let mut c = with(json!({}));
            c.as_object_mut().unwrap().remove("jti");
            key.sign(&c)
        }),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    let mut bodies = Vec::new();
    for (case, assertion) in cases {
        let (status, body) = api.exchange(&assertion).await;
        assert_eq!(status, 401, "{case}: {body}");
        bodies.push((case, body));
    }
    for (case, body) in &bodies {
        assert_eq!(
            body, &bodies[0].1,
            "{case} must look like every other refusal"
        );
    }

    // Request-shape errors are not assertion refusals.
    let (status, _) = send(
        app.http()
            .post(app.url("/v1/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("grant_type", "password"), ("assertion", "x")])),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(
        app.http()
            .post(app.url("/v1/auth/token"))
            .body("assertion=x"),
    )
    .await;
    assert_eq!(status, 415);
    // JSON works as well as the form.
    let (status, body) = send(app.http().post(app.url("/v1/auth/token")).json(&json!({
        "grant_type": GRANT, "assertion": key.sign(&claims("acme", "d1")),
    })))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 900);
    app.stop().await;
}

// Several worker threads, so that the host runs the exchanges truly in parallel (on
// the default single-threaded test runtime they would only interleave where the
// component waits for I/O).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_assertion_replayed_in_parallel_is_exchanged_exactly_once() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::es256();
    api.register(&admin, "d1", &key).await;

    // A captured assertion, fired RACERS times at once.
    const RACERS: usize = 16;
    let captured = claims("acme", "d1");
    let assertion = key.sign(&captured);
    let racers = (0..RACERS).map(|_| api.exchange(&assertion));
    let results = futures::future::join_all(racers).await;
    let mut statuses: Vec<u16> = results.iter().map(|(s, _)| s.as_u16()).collect();
    statuses.sort();
    let mut expected = vec![401; RACERS];
    expected[0] = 200;
    assert_eq!(statuses, expected, "exactly one exchange succeeds");
    let refusals: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 401)
        .map(|(_, b)| b)
        .collect();
    let (_, unknown) = api.exchange(&key.sign(&claims("acme", "nobody"))).await;
    for body in refusals {
        assert_eq!(body, &unknown, "a replay looks like every other refusal");
    }
    // And once more afterwards.
    assert_eq!(api.exchange(&assertion).await.0, 401, "sequential replay");

    let jti = captured["jti"].as_str().unwrap();
    let recorded = count(
        &app,
        &format!(
            "SELECT count(*) FROM used_assertions \
             WHERE tenant_id = 'acme' AND device_id = 'd1' AND jti = '{jti}' \
               AND expires_at = to_timestamp({})",
            captured["exp"].as_u64().unwrap() + 61
        ),
    )
    .await;
    assert_eq!(recorded, 1, "kept until exp + leeway + 1 s");

    // Expired rows of the device are deleted by its next login; nobody else's are.
    let db = app.db.client().await;
    db.execute(
        "INSERT INTO used_assertions (tenant_id, device_id, jti, expires_at) VALUES \
         ('acme', 'd1', 'old', now() - interval '1 second'), \
         ('acme', 'd2', 'old', now() - interval '1 second')",
        &[],
    )
    .await
    .unwrap();
    let token = api.login("acme", "d1", &key).await;
    assert_eq!(api.me(&token).await.0, 200, "a fresh jti still works");
    let rows = |device: &'static str| {
        let app = &app;
        async move {
            count(
                app,
                &format!("SELECT count(*) FROM used_assertions WHERE device_id = '{device}'"),
            )
            .await
        }
    };
    assert_eq!(rows("d1").await, 2, "the captured jti and the fresh one");
    assert_eq!(rows("d2").await, 1);

    // A decommissioned device can never log in again: its jtis go.
    assert_eq!(send(api.delete("/v1/devices/d1", &admin)).await.0, 204);
    assert_eq!(rows("d1").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_used_assertion_stays_used_when_the_key_value_store_is_lost() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::ed25519();
    api.register(&admin, "d1", &key).await;
    let assertion = key.sign(&claims("acme", "d1"));
    assert_eq!(api.exchange(&assertion).await.0, 200);

    // The same app and database behind a host whose key-value store is empty: a wiped
    // or failed-over store, which the key-value store may always be.
    let variables = BTreeMap::from([
        ("db_url".to_owned(), app.db.url.clone()),
        ("db_host".to_owned(), app.db.host_port()),
        (
            "token_signing_key".to_owned(),
            app.token_signing_key.clone(),
        ),
        (
            "manifest_signing_key".to_owned(),
            app.manifest_signing_key.clone(),
        ),
    ]);
    let wiped = serve_app(variables, Limits::default())
        .await
        .expect("a second host starts");
    let exchange = |assertion: String| {
        wiped
            .http
            .post(wiped.url("/v1/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("grant_type", GRANT), ("assertion", &assertion)]))
    };
    let (status, body) = send(exchange(assertion)).await;
    assert_eq!(status, 401, "replayed after the store was lost: {body}");
    let (status, body) = send(exchange(key.sign(&claims("acme", "d1")))).await;
    assert_eq!(status, 200, "a fresh assertion still works: {body}");
    wiped.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn access_tokens_are_checked_for_presence_role_and_signature() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::es256();
    api.register(&admin, "d1", &key).await;
    let device = api.login("acme", "d1", &key).await;

    let response = app.http().get(app.url("/v1/devices")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="toaster""#
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = app
        .http()
        .get(app.url("/v1/devices"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A token signed with another secret.
    let forged = toaster_core::token::TokenSigner::from_secret(&"x".repeat(40))
        .unwrap()
        .mint(
            &toaster_core::token::AccessClaims::operator("mallory"),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(send(api.get("/v1/devices", &forged)).await.0, 401);
    // Wrong roles.
    assert_eq!(send(api.get("/v1/devices", &device)).await.0, 403);
    assert_eq!(
        send(api.get("/v1/devices", &app.operator_token())).await.0,
        403
    );
    assert_eq!(
        send(api.post("/v1/tenants", &admin, &json!({"name": "x"})))
            .await
            .0,
        403
    );
    assert_eq!(
        send(api.post("/v1/claims", &device, &json!({}))).await.0,
        403
    );
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_devices_are_not_found() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let a = api.tenant("tenant-a").await;
    let b = api.tenant("tenant-b").await;
    let key = DeviceKey::es256();
    api.register(&b, "shared-name", &key).await;
    api.register(&b, "only-b", &key).await;

    assert_eq!(send(api.get("/v1/devices/only-b", &a)).await.0, 404);
    let (status, list) = send(api.get("/v1/devices", &a)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"], json!([]));
    let (status, list) = send(api.get("/v1/devices?tag=site%3Dberlin", &a)).await;
    assert_eq!((status, list["items"].clone()), (StatusCode::OK, json!([])));
    assert_eq!(
        send(api.patch("/v1/devices/only-b", &a, &json!({"status": "disabled"})))
            .await
            .0,
        404
    );
    assert_eq!(send(api.delete("/v1/devices/only-b", &a)).await.0, 404);
    assert_eq!(
        send(api.delete("/v1/devices/only-b?erase=true", &a))
            .await
            .0,
        404
    );
    // The same id in tenant A is a different device.
    api.register(&a, "shared-name", &DeviceKey::ed25519()).await;
    let (_, list) = send(api.get("/v1/devices", &b)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, device) = send(api.get("/v1/devices/only-b", &b)).await;
    assert_eq!(device["status"], "active", "B's device is untouched");
    // A device cannot log in to another tenant with its own key.
    let (status, _) = api.exchange(&key.sign(&claims("tenant-a", "only-b"))).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_devices_token_is_refused_on_its_next_call() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::es256();
    api.register(&admin, "d1", &key).await;
    let token = api.login("acme", "d1", &key).await;
    assert_eq!(api.me(&token).await.0, 200);

    let (status, device) =
        send(api.patch("/v1/devices/d1", &admin, &json!({"status": "disabled"}))).await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["status"], "disabled");
    assert_eq!(device["key_generation"], 2);
    let (status, body) = api.me(&token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(api.exchange(&key.sign(&claims("acme", "d1"))).await.0, 401);

    // Enabling lets the device log in again; the old token stays revoked.
    let (status, _) = send(api.patch("/v1/devices/d1", &admin, &json!({"status": "active"}))).await;
    assert_eq!(status, 200);
    assert_eq!(api.me(&token).await.0, 401);
    let fresh = api.login("acme", "d1", &key).await;
    assert_eq!(api.me(&fresh).await.0, 200);

    // Decommissioning revokes too, and the device can no longer log in.
    assert_eq!(send(api.delete("/v1/devices/d1", &admin)).await.0, 204);
    assert_eq!(api.me(&fresh).await.0, 401);
    assert_eq!(api.exchange(&key.sign(&claims("acme", "d1"))).await.0, 401);
    let (_, device) = send(api.get("/v1/devices/d1", &admin)).await;
    assert_eq!(device["status"], "decommissioned");
    assert_eq!(device["keys"], json!([]));
    // The id is not reusable, and a decommissioned device cannot be re-enabled.
    assert_eq!(
        send(api.post(
            "/v1/devices",
            &admin,
            &json!({"id": "d1", "model": "t1000", "public_key": key.public_pem})
        ))
        .await
        .0,
        409
    );
    assert_eq!(
        send(api.patch("/v1/devices/d1", &admin, &json!({"status": "active"})))
            .await
            .0,
        409
    );

    // The whole story is in the audit log, newest first.
    let (status, audit) = send(api.get("/v1/audit?limit=3", &admin)).await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["device.decommissioned", "device.enabled", "device.disabled"]
    );
    assert_eq!(audit["items"][0]["actor"]["name"], "alice@example.com");
    let cursor = audit["next_cursor"].as_str().unwrap();
    let (_, rest) = send(api.get(&format!("/v1/audit?cursor={cursor}"), &admin)).await;
    let actions: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["device.created", "token.minted", "tenant.created"]
    );
    assert_eq!(rest["next_cursor"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn key_rotation_completes_on_login_with_the_new_key() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let old = DeviceKey::es256();
    api.register(&admin, "d1", &old).await;
    let old_token = api.login("acme", "d1", &old).await;

    let new = DeviceKey::ed25519();
    let (status, device) = send(api.patch(
        "/v1/devices/d1",
        &admin,
        &json!({"public_key": new.public_pem}),
    ))
    .await;
    assert_eq!(status, 200, "{device}");
    let states: Vec<&str> = device["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["current", "pending"]);
    // During the rotation both keys log in, and tokens stay valid.
    assert_eq!(api.me(&old_token).await.0, 200);
    let _ = api.login("acme", "d1", &old).await;
    let new_token = api.login("acme", "d1", &new).await;

    // Logging in with the new key completed the rotation.
    let (status, me) = api.me(&new_token).await;
    assert_eq!(
        (status, me["key_generation"].clone()),
        (StatusCode::OK, json!(2))
    );
    assert_eq!(api.me(&old_token).await.0, 401, "old tokens are revoked");
    assert_eq!(
        api.exchange(&old.sign(&claims("acme", "d1"))).await.0,
        401,
        "the old key can no longer log in"
    );
    let (_, device) = send(api.get("/v1/devices/d1", &admin)).await;
    assert_eq!(device["keys"].as_array().unwrap().len(), 1);
    assert_eq!(device["keys"][0]["algorithm"], "EdDSA");

    // An admin can complete a rotation too (a compromised key: no wait for the device).
    let newer = DeviceKey::ed25519();
    let (status, device) = send(api.patch(
        "/v1/devices/d1",
        &admin,
        &json!({"public_key": newer.public_pem, "complete_rotation": true}),
    ))
    .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["key_generation"], 3);
    assert_eq!(api.me(&new_token).await.0, 401);
    assert_eq!(api.exchange(&new.sign(&claims("acme", "d1"))).await.0, 401);
    let _ = api.login("acme", "d1", &newer).await;
    // Nothing to complete now; the current key cannot be "rotated" to itself.
    assert_eq!(
        send(api.patch(
            "/v1/devices/d1",
            &admin,
            &json!({"complete_rotation": true})
        ))
        .await
        .0,
        409
    );
    assert_eq!(
        send(api.patch(
            "/v1/devices/d1",
            &admin,
            &json!({"public_key": newer.public_pem})
        ))
        .await
        .0,
        409
    );
    app.stop().await;
}

// A rotation completes once however many complete it at once: each completion is one
// statement that writes only if the device row is the version it decided on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_completed_in_parallel_completes_once() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let rotated = "SELECT count(*) FROM audit_log WHERE tenant_id = 'acme' \
                   AND action = 'device.key_rotated'";
    let generation = |device: &str| {
        format!(
            "SELECT key_generation FROM devices WHERE tenant_id = 'acme' AND device_id = '{device}'"
        )
    };

    // Devices logging in with the pending key, all at once: every login succeeds, every
    // token carries the one new generation.
    let old = DeviceKey::es256();
    api.register(&admin, "d1", &old).await;
    let new = DeviceKey::ed25519();
    let (status, body) = send(api.patch(
        "/v1/devices/d1",
        &admin,
        &json!({"public_key": new.public_pem}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    const RACERS: usize = 6;
    let assertions: Vec<String> = (0..RACERS)
        .map(|_| new.sign(&claims("acme", "d1")))
        .collect();
    let results = futures::future::join_all(assertions.iter().map(|a| api.exchange(a))).await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap();
        let (status, me) = api.me(token).await;
        assert_eq!(
            (status, me["key_generation"].clone()),
            (StatusCode::OK, json!(2))
        );
    }
    assert_eq!(count(&app, rotated).await, 1, "audited once");
    assert_eq!(count(&app, &generation("d1")).await, 2, "bumped once");

    // Admins completing the same rotation at once: one 200, the others 409.
    let other = DeviceKey::es256();
    api.register(&admin, "d2", &other).await;
    let (status, body) = send(api.patch(
        "/v1/devices/d2",
        &admin,
        &json!({"public_key": DeviceKey::ed25519().public_pem}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let patches = (0..RACERS).map(|_| {
        send(api.patch(
            "/v1/devices/d2",
            &admin,
            &json!({"complete_rotation": true}),
        ))
    });
    let mut statuses: Vec<u16> = futures::future::join_all(patches)
        .await
        .iter()
        .map(|(s, _)| s.as_u16())
        .collect();
    statuses.sort();
    let mut expected = vec![409; RACERS];
    expected[0] = 200;
    assert_eq!(statuses, expected, "exactly one completes it");
    assert_eq!(count(&app, rotated).await, 2, "audited once more");
    assert_eq!(count(&app, &generation("d2")).await, 2, "bumped once");
    app.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_refused_and_store_nothing() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::es256();
    let good = json!({"id": "d1", "model": "t1000", "public_key": key.public_pem});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("id of the wrong type", with("id", json!(42)), 422, "/id"),
        ("tags not a list", with("tags", json!("a")), 422, "/tags"),
        (
            "a tag of the wrong type",
            with("tags", json!(["a", 1])),
            422,
            "/tags/1",
        ),
        ("unknown field", with("admin", json!(true)), 422, "/admin"),
        ("huge id", with("id", json!("x".repeat(5000))), 422, "/id"),
        (
            "huge model",
            with("model", json!("m".repeat(1000))),
            422,
            "/model",
        ),
        (
            "SQL in the id",
            with("id", json!("d1'; DROP TABLE devices; --")),
            422,
            "/id",
        ),
        (
            "SQL in a tag",
            with("tags", json!(["x' OR '1'='1"])),
            422,
            "/tags/0",
        ),
        (
            "invalid PEM",
            with(
                "public_key",
                json!("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"),
            ),
            422,
            "/public_key",
        ),
        (
            "not a PEM",
            with("public_key", json!("ssh-ed25519 AAAA")),
            422,
            "/public_key",
        ),
        (
            "missing key",
            {
                let mut b = good.clone();
                b.as_object_mut().unwrap().remove("public_key");
                b
            },
            422,
            "/public_key",
        ),
        (
            "too many tags",
            with(
                "tags",
                json!((0..40).map(|i| format!("t{i}")).collect::<Vec<_>>()),
            ),
            422,
            "/tags",
        ),
        (
            "a body too large",
            with("model", json!("m".repeat(20_000))),
            413,
            "",
        ),
    ];
    for (case, body, status, pointer) in cases {
        let (got, problem) = send(api.post("/v1/devices", &admin, &body)).await;
        assert_eq!(got.as_u16(), status, "{case}: {problem}");
        if status == 422 {
            assert_eq!(
                problem["errors"][0]["pointer"], pointer,
                "{case}: {problem}"
            );
            let text = problem.to_string();
            assert!(
                !text.contains("DROP TABLE") && !text.contains("xxxxxxxxxx"),
                "{case} echoed: {text}"
            );
        }
    }
    let (status, _) = send(
        app.http()
            .post(app.url("/v1/devices"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body("{\"id\": "),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(
        app.http()
            .post(app.url("/v1/devices"))
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body(good.to_string()),
    )
    .await;
    assert_eq!(status, 415);
    // Claims and provisioning refuse the same way.
    for (body, pointer) in [
        (
            json!({"model": "t1000", "quota": 0, "expires_in_secs": 3600}),
            "/quota",
        ),
        (
            json!({"model": "t1000", "quota": "9; DROP TABLE claims", "expires_in_secs": 3600}),
            "/quota",
        ),
        (
            json!({"model": "t1000", "quota": 1, "expires_in_secs": 1}),
            "/expires_in_secs",
        ),
        (json!({"model": "t1000", "quota": 1}), "/expires_in_secs"),
    ] {
        let (status, problem) = send(api.post("/v1/claims", &admin, &body)).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    let (status, problem) = send(app.http().post(app.url("/v1/provision")).json(&json!({
        "claim_token": "tclaim_x", "device_id": "d9", "public_key": "nope",
    })))
    .await;
    assert_eq!(status, 422, "{problem}");

    assert_eq!(count(&app, "SELECT count(*) FROM devices").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM device_keys").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM claims").await, 0);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM audit_log WHERE action NOT IN ('tenant.created', 'token.minted')"
        )
        .await,
        0
    );
    // And the good body still works afterwards.
    assert_eq!(send(api.post("/v1/devices", &admin, &good)).await.0, 201);
    assert_eq!(send(api.post("/v1/devices", &admin, &good)).await.0, 409);
    app.stop().await;
}

#[tokio::test]
async fn two_devices_racing_for_the_last_slot_exactly_one_wins() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let (status, claim) = send(api.post(
        "/v1/claims",
        &admin,
        &json!({"model": "t1000", "quota": 2, "expires_in_secs": 600}),
    ))
    .await;
    assert_eq!(status, 201);
    let token = claim["claim_token"].as_str().unwrap().to_owned();
    let provision = |device: String| {
        let (http, url, token) = (app.http().clone(), app.url("/v1/provision"), token.clone());
        async move {
            let key = DeviceKey::es256();
            let response = http
                .post(url)
                .json(&json!({"claim_token": token, "device_id": device, "public_key": key.public_pem}))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    // Spend one slot; then eight devices race for the last one.
    assert_eq!(provision("first".into()).await, 201);
    let racers = (0..8).map(|i| provision(format!("racer-{i}")));
    let mut statuses = futures::future::join_all(racers).await;
    statuses.sort();
    assert_eq!(statuses, [201, 401, 401, 401, 401, 401, 401, 401]);
    assert_eq!(count(&app, "SELECT count(*) FROM devices").await, 2);
    assert_eq!(count(&app, "SELECT used::int8 FROM claims").await, 2);

    // A device id taken in the tenant does not spend quota.
    let (status, claim) = send(api.post(
        "/v1/claims",
        &admin,
        &json!({"model": "t1000", "quota": 1, "expires_in_secs": 600}),
    ))
    .await;
    assert_eq!(status, 201);
    let token = claim["claim_token"].as_str().unwrap().to_owned();
    let key = DeviceKey::es256();
    let body = |device: &str| json!({"claim_token": token, "device_id": device, "public_key": key.public_pem});
    let (status, _) = send(
        app.http()
            .post(app.url("/v1/provision"))
            .json(&body("first")),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = send(
        app.http()
            .post(app.url("/v1/provision"))
            .json(&body("second")),
    )
    .await;
    assert_eq!(status, 201);

    // Expired claims are refused like unknown ones.
    app.db
        .client()
        .await
        .execute(
            "UPDATE claims SET quota = 100, expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let (status, _) = send(
        app.http()
            .post(app.url("/v1/provision"))
            .json(&body("third")),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(app.http().post(app.url("/v1/provision")).json(&json!({
        "claim_token": "tclaim_guessed", "device_id": "x", "public_key": key.public_pem,
    })))
    .await;
    assert_eq!(status, 401);
    let (_, audit) = send(api.get("/v1/audit", &admin)).await;
    let provisioned = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "device.provisioned")
        .count();
    assert_eq!(provisioned, 3);
    app.stop().await;
}

#[tokio::test]
async fn each_device_has_its_own_rate_limit() {
    let app = TestApp::start_with(
        Limits::default(),
        BTreeMap::from([("device_rate_limit".to_owned(), "3/600s".to_owned())]),
    )
    .await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let (busy, quiet) = (DeviceKey::es256(), DeviceKey::es256());
    api.register(&admin, "busy", &busy).await;
    api.register(&admin, "quiet", &quiet).await;
    // The login counts against the budget too.
    let busy_token = api.login("acme", "busy", &busy).await;
    assert_eq!(api.me(&busy_token).await.0, 200);
    assert_eq!(api.me(&busy_token).await.0, 200);
    let response = api.get("/v1/auth/me", &busy_token).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");

    let quiet_token = api.login("acme", "quiet", &quiet).await;
    assert_eq!(
        api.me(&quiet_token).await.0,
        200,
        "another device is not slowed"
    );
    // Admins are not counted per device.
    for _ in 0..5 {
        assert_eq!(send(api.get("/v1/devices", &admin)).await.0, 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn devices_are_listed_by_filter_with_a_cursor_and_erased_on_request() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::ed25519();
    for (id, model, channel, tags) in [
        ("a1", "t1000", "stable", json!(["site=berlin"])),
        ("a2", "t1000", "beta", json!(["site=paris"])),
        (
            "a3",
            "t2000",
            "stable",
            json!(["site=berlin", "ring:canary"]),
        ),
        ("a4", "t1000", "stable", json!([])),
    ] {
        let (status, body) = send(api.post(
            "/v1/devices",
            &admin,
            &json!({"id": id, "model": model, "channel": channel, "tags": tags, "public_key": key.public_pem}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, page) = send(api.get("/v1/devices?model=t1000", &admin)).await;
    assert_eq!(ids(&page), ["a1", "a2", "a4"]);
    let (_, page) = send(api.get("/v1/devices?tag=site%3Dberlin", &admin)).await;
    assert_eq!(ids(&page), ["a1", "a3"]);
    let (_, page) = send(api.get("/v1/devices?channel=stable&model=t1000", &admin)).await;
    assert_eq!(ids(&page), ["a1", "a4"]);
    let (_, page) = send(api.get("/v1/devices?limit=3", &admin)).await;
    assert_eq!(ids(&page), ["a1", "a2", "a3"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = send(api.get(&format!("/v1/devices?limit=3&cursor={cursor}"), &admin)).await;
    assert_eq!(ids(&page), ["a4"]);
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(send(api.get("/v1/devices?colour=red", &admin)).await.0, 400);
    assert_eq!(send(api.get("/v1/devices?limit=0", &admin)).await.0, 400);

    // Erasure: telemetry and its rollups go with the device.
    let db = app.db.client().await;
    db.execute(
        "INSERT INTO telemetry (tenant_id, device_id, metric, ts, value, value_is_bool) \
         VALUES ('acme', 'a1', 'temp_c', now(), 21.5, false), ('acme', 'a2', 'temp_c', now(), 20, false)",
        &[],
    )
    .await
    .unwrap();
    for table in ["rollup_minute", "rollup_hour"] {
        db.execute(
            &format!(
                "INSERT INTO {table} (tenant_id, device_id, metric, bucket, readings, total, low, high, \
                 first_ts, first_value, last_ts, last_value) \
                 SELECT 'acme', d, 'temp_c', date_trunc('hour', now()), 1, 1, 1, 1, now(), 1, now(), 1 \
                 FROM unnest(ARRAY['a1', 'a2']) AS d"
            ),
            &[],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        send(api.delete("/v1/devices/a1?erase=true", &admin))
            .await
            .0,
        204
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM telemetry WHERE device_id = 'a1'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM telemetry WHERE device_id = 'a2'"
        )
        .await,
        1
    );
    for table in ["rollup_minute", "rollup_hour"] {
        assert_eq!(
            count(
                &app,
                &format!("SELECT count(*) FROM {table} WHERE device_id = 'a1'")
            )
            .await,
            0,
            "{table}"
        );
        assert_eq!(
            count(
                &app,
                &format!("SELECT count(*) FROM {table} WHERE device_id = 'a2'")
            )
            .await,
            1,
            "{table}"
        );
    }
    let (_, page) = send(api.get("/v1/devices?status=decommissioned", &admin)).await;
    assert_eq!(ids(&page), ["a1"]);
    app.stop().await;
}

/// Hardening A and B: serde's derives also read a struct from a positional array, an
/// enum from `{"variant": null}`, and `null` for an optional field; no schema allows any
/// of them, so every body refuses them with 422 at the field, and nothing is stored.
#[tokio::test]
async fn bodies_are_objects_and_no_field_is_null() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let operator = app.operator_token();
    let admin = api.tenant("acme").await;
    let key = DeviceKey::es256();
    api.register(&admin, "d1", &key).await;
    let refused = |problem: &Value, pointer: &str, detail: &str| {
        assert_eq!(problem["status"], 422, "{problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        assert_eq!(problem["errors"][0]["detail"], detail, "{problem}");
    };

    let posts: Vec<(String, &str, Value, &str, &str)> = vec![
        // [id, name]: serde's sequence form of the tenant.
        (
            "/v1/tenants".into(),
            &operator,
            json!(["byposition", "Made by position"]),
            "",
            "must be an object",
        ),
        (
            "/v1/tenants".into(),
            &operator,
            json!([null, "Made by position"]),
            "",
            "must be an object",
        ),
        (
            "/v1/tenants".into(),
            &operator,
            json!("acme2"),
            "",
            "must be an object",
        ),
        (
            "/v1/tenants".into(),
            &operator,
            json!({"id": null, "name": "Null id"}),
            "/id",
            "must not be null",
        ),
        (
            "/v1/tenants/acme/tokens".into(),
            &operator,
            json!(["bob", 600]),
            "",
            "must be an object",
        ),
        (
            "/v1/tenants/acme/tokens".into(),
            &operator,
            json!({"subject": "bob", "ttl_secs": null}),
            "/ttl_secs",
            "must not be null",
        ),
        (
            "/v1/devices".into(),
            &admin,
            json!(["d2", "t1000", "stable", [], key.public_pem]),
            "",
            "must be an object",
        ),
        (
            "/v1/devices".into(),
            &admin,
            json!({"id": "d2", "model": "t1000", "channel": null, "public_key": key.public_pem}),
            "/channel",
            "must not be null",
        ),
        (
            "/v1/devices".into(),
            &admin,
            json!({"id": "d2", "model": "t1000", "tags": null, "public_key": key.public_pem}),
            "/tags",
            "must not be null",
        ),
        (
            "/v1/claims".into(),
            &admin,
            json!(["t1000", "stable", [], 5, 600]),
            "",
            "must be an object",
        ),
    ];
    for (path, token, body, pointer, detail) in posts {
        let (status, problem) = send(api.post(&path, token, &body)).await;
        assert_eq!(status, 422, "{path} {body}: {problem}");
        refused(&problem, pointer, detail);
    }
    for body in [
        json!({"status": null, "channel": "beta"}),
        json!({"channel": "beta", "public_key": null}),
        json!({"channel": "beta", "complete_rotation": null}),
        json!({"channel": null}),
        json!({"tags": null}),
    ] {
        let (status, problem) = send(api.patch("/v1/devices/d1", &admin, &body)).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(
            problem["errors"][0]["detail"], "must not be null",
            "{problem}"
        );
    }
    // An enum is its string, not serde's `{"variant": null}`.
    let (status, problem) = send(api.patch(
        "/v1/devices/d1",
        &admin,
        &json!({"status": {"disabled": null}}),
    ))
    .await;
    assert_eq!(status, 422, "{problem}");
    refused(
        &problem,
        "/status",
        "has the wrong type; expected `active` or `disabled`",
    );
    let (status, problem) = send(api.patch("/v1/devices/d1", &admin, &json!(["disabled"]))).await;
    assert_eq!(status, 422, "{problem}");
    refused(&problem, "", "must be an object");
    // The endpoints without a token read bodies the same way.
    let (status, problem) = send(app.http().post(app.url("/v1/provision")).json(&json!([
        "tclaim_x",
        "d3",
        key.public_pem
    ])))
    .await;
    assert_eq!(status, 422, "{problem}");
    refused(&problem, "", "must be an object");
    let (status, problem) = send(
        app.http()
            .post(app.url("/v1/auth/token"))
            .json(&json!([GRANT, key.sign(&claims("acme", "d1"))])),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    refused(&problem, "", "must be an object");

    assert_eq!(count(&app, "SELECT count(*) FROM tenants").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM devices").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM claims").await, 0);
    let (_, device) = send(api.get("/v1/devices/d1", &admin)).await;
    assert_eq!(device["status"], "active", "{device}");
    assert_eq!(device["channel"], "stable", "{device}");
    assert_eq!(device["tags"], json!(["site=berlin"]), "{device}");
    // Leaving the optional fields out still works.
    let (status, body) =
        send(api.post("/v1/tenants", &operator, &json!({"name": "Generated"}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(api.post(
        "/v1/tenants/acme/tokens",
        &operator,
        &json!({"subject": "bob"}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in"], 3600);
    app.stop().await;
}

/// Hardening C: a cursor is one the list returned, or 400. `?cursor=zzzz` (or any
/// device id) used to answer 200 with the devices "after" it: an empty page that
/// looks like the end of the list.
#[tokio::test]
async fn list_cursors_are_opaque_and_checked() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::ed25519();
    for id in ["a1", "a2", "a3"] {
        api.register(&admin, id, &key).await;
    }
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, page) = send(api.get("/v1/devices?limit=2", &admin)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["a1", "a2"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_ne!(cursor, "a2", "the cursor is not the bare id");
    let (status, page) = send(api.get(&format!("/v1/devices?cursor={cursor}"), &admin)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["a3"]);

    for path in [
        "/v1/devices?cursor=zzzz",
        "/v1/devices?cursor=a1",
        "/v1/devices?cursor=",
        "/v1/devices?cursor=%00",
        "/v1/audit?cursor=zzzz",
        "/v1/audit?cursor=-1",
    ] {
        let (status, problem) = send(api.get(path, &admin)).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["type"], "https://toaster.dev/problems/bad-request");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("cursor"), "{path}: {detail}");
    }
    // Another list's cursor is not this one's.
    let (_, audit) = send(api.get("/v1/audit?limit=1", &admin)).await;
    let audit_cursor = audit["next_cursor"].as_str().unwrap();
    let (status, _) = send(api.get(&format!("/v1/devices?cursor={audit_cursor}"), &admin)).await;
    assert_eq!(status, 400);
    app.stop().await;
}

/// Waits, if need be, until the current minute has at least `needed` seconds left, so
/// that a run of attempts counted in one 60 s window (they are aligned to the clock's
/// minutes) does not straddle two.
async fn within_one_minute(needed: u64) {
    let into = now() % 60;
    if into + needed > 60 {
        tokio::time::sleep(std::time::Duration::from_secs(60 - into)).await;
    }
}

/// The parts of a 429 that every throttled answer has.
async fn assert_throttled(response: reqwest::Response, window_secs: u64, detail: &str) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=window_secs).contains(&retry_after), "{retry_after}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "https://toaster.dev/problems/rate-limited");
    let text = problem["detail"].as_str().unwrap();
    assert!(text.contains(detail), "{text}");
}

/// Hardening E: refused attempts at the two endpoints without a token are throttled
/// per client address (default 60 per 60 s), before the database is touched, and the
/// budget lives in the key-value store (shared by replicas).
#[tokio::test]
async fn refused_attempts_without_a_token_are_throttled_per_address() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let key = DeviceKey::es256();
    api.register(&admin, "d1", &key).await;
    let (status, claim) = send(api.post(
        "/v1/claims",
        &admin,
        &json!({"model": "t1000", "quota": 5, "expires_in_secs": 600}),
    ))
    .await;
    assert_eq!(status, 201);
    let token = claim["claim_token"].as_str().unwrap().to_owned();

    within_one_minute(30).await;
    // A connection per request: the wait above may outlast the host's idle timeout
    // (15 s), and a pooled connection it closes would fail the next request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let provision = |device: &str, claim_token: &str| {
        http.post(app.url("/v1/provision"))
            .json(&json!({"claim_token": claim_token, "device_id": device, "public_key": key.public_pem}))
            .send()
    };
    let login = |device: &str| {
        http.post(app.url("/v1/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", GRANT),
                ("assertion", &key.sign(&claims("acme", device))),
            ]))
            .send()
    };
    // 60 refusals, half guessed claim tokens, half logins of devices nobody has; each
    // names another credential, so only the address's budget is spent.
    for i in 0..60 {
        let response = if i % 2 == 0 {
            provision(&format!("g{i}"), &format!("tclaim_guess{i}")).await
        } else {
            login(&format!("ghost-{i}")).await
        };
        assert_eq!(response.unwrap().status(), 401, "attempt {i}");
    }
    // Now even valid attempts from this address wait, and the database is not asked.
    assert_throttled(login("d1").await.unwrap(), 60, "from this address").await;
    let response = provision("d2", &token).await.unwrap();
    assert_throttled(response, 60, "from this address").await;
    assert_eq!(count(&app, "SELECT used::int8 FROM claims").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM devices").await, 1);
    assert_eq!(
        count(&app, "SELECT count(*) FROM used_assertions").await,
        0,
        "the login never reached the database"
    );

    // The count is the store's: one key for the address's bucket, not one per window,
    // and no address in it.
    let kv = app.host.kv();
    let key = toaster_platform::kv::failed_address_key("127.0.0.1");
    assert!(!key.contains("127.0.0.1"), "{key}");
    let window = kv.get_json("default", &key).expect("the address's window");
    assert_eq!(window["count"], 60, "{window}");
    kv.delete("default", &key);
    assert_eq!(provision("d2", &token).await.unwrap().status(), 201);
    assert_eq!(login("d1").await.unwrap().status(), 200);
    app.stop().await;
}

/// Hardening E: refusals naming one claim token or one device are throttled across
/// addresses, whether or not the token or device exists (so a 429 tells nothing), and
/// another claim or device is not slowed.
#[tokio::test]
async fn refused_attempts_are_throttled_per_claim_token_and_device() {
    let app = TestApp::start_with(
        Limits::default(),
        BTreeMap::from([
            (
                "unauthenticated_failure_rate_limit".to_owned(),
                "1000/3600s".to_owned(),
            ),
            (
                "credential_failure_rate_limit".to_owned(),
                "3/3600s".to_owned(),
            ),
        ]),
    )
    .await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let (key, other_key) = (DeviceKey::es256(), DeviceKey::ed25519());
    api.register(&admin, "d1", &key).await;
    api.register(&admin, "d2", &other_key).await;

    // Three logins of d1 signed with another key; then d1's own is refused too.
    for _ in 0..3 {
        assert_eq!(
            api.exchange(&other_key.sign(&claims("acme", "d1"))).await.0,
            401
        );
    }
    let throttled = |assertion: String| {
        app.http()
            .post(app.url("/v1/auth/token"))
            .json(&json!({"grant_type": GRANT, "assertion": assertion}))
            .send()
    };
    let response = throttled(key.sign(&claims("acme", "d1"))).await.unwrap();
    assert_throttled(response, 3600, "for this device").await;
    api.login("acme", "d2", &other_key).await;
    // A device nobody has is throttled alike.
    for _ in 0..3 {
        assert_eq!(
            api.exchange(&key.sign(&claims("acme", "ghost"))).await.0,
            401
        );
    }
    let response = throttled(key.sign(&claims("acme", "ghost"))).await.unwrap();
    assert_throttled(response, 3600, "for this device").await;

    // A used-up claim token: three refusals, then 429; another claim still works.
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (status, claim) = send(api.post(
            "/v1/claims",
            &admin,
            &json!({"model": "t1000", "quota": 1, "expires_in_secs": 600}),
        ))
        .await;
        assert_eq!(status, 201);
        tokens.push(claim["claim_token"].as_str().unwrap().to_owned());
    }
    let (spent, fresh) = (&tokens[0], &tokens[1]);
    let provision = |device: &str, token: &str| {
        app.http()
            .post(app.url("/v1/provision"))
            .json(&json!({"claim_token": token, "device_id": device, "public_key": key.public_pem}))
            .send()
    };
    assert_eq!(provision("p0", spent).await.unwrap().status(), 201);
    for i in 1..=3 {
        let status = provision(&format!("p{i}"), spent).await.unwrap().status();
        assert_eq!(status, 401);
    }
    let response = provision("p4", spent).await.unwrap();
    assert_throttled(response, 3600, "with this claim token").await;
    assert_eq!(provision("q0", fresh).await.unwrap().status(), 201);
    app.stop().await;
}

/// Hardening E, the trade-off: successes are not counted, so a fleet provisioning and
/// logging in many devices from one gateway address is never slowed by the default
/// (here 80 devices, 160 attempts, from 127.0.0.1), even with a few refusals mixed in.
#[tokio::test]
async fn a_fleet_behind_one_address_is_not_throttled() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let (status, claim) = send(api.post(
        "/v1/claims",
        &admin,
        &json!({"model": "t1000", "quota": 100, "expires_in_secs": 600}),
    ))
    .await;
    assert_eq!(status, 201);
    let token = claim["claim_token"].as_str().unwrap().to_owned();
    for i in 0..80 {
        let key = DeviceKey::ed25519();
        let device = format!("fleet-{i:03}");
        let (status, body) = send(app.http().post(app.url("/v1/provision")).json(&json!({
            "claim_token": token, "device_id": device, "public_key": key.public_pem,
        })))
        .await;
        assert_eq!(status, 201, "{device}: {body}");
        api.login("acme", &device, &key).await;
        if i % 10 == 0 {
            // A device resending after a lost answer: refused, and counted.
            let (status, _) = send(app.http().post(app.url("/v1/provision")).json(&json!({
                "claim_token": token, "device_id": device, "public_key": key.public_pem,
            })))
            .await;
            assert_eq!(status, 409);
        }
    }
    assert_eq!(count(&app, "SELECT count(*) FROM devices").await, 80);
    app.stop().await;
}

#[tokio::test]
async fn a_known_path_with_another_method_is_405_naming_the_allowed_ones() {
    let app = TestApp::start().await;
    let operator = app.operator_token();
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/v1/tenants", "GET, POST"),
        (
            reqwest::Method::POST,
            "/v1/devices/sn-1",
            "GET, PATCH, DELETE",
        ),
        (reqwest::Method::GET, "/v1/auth/token", "POST"),
    ] {
        let response = app
            .http()
            .request(method.clone(), app.url(path))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["type"],
            "https://toaster.dev/problems/method-not-allowed"
        );
        assert_eq!(body["title"], "Method Not Allowed");
    }
    // A path under the component's routes that no handler serves is 404 whatever
    // the method, with the table's title. (A path no spin.toml route matches is
    // answered by the runtime itself, not the component: an empty 404 on Spin,
    // docs/spin-differences.md 3.20.)
    let response = app
        .http()
        .put(app.url("/v1/auth/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["title"], "Not Found");
    app.stop().await;
}

// ---------------------------------------------------------------- the console's reads

/// The ids of a list page.
fn page_ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {body}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether the `bool` a query answers is true.
async fn holds(app: &TestApp, sql: &str) -> bool {
    app.db
        .client()
        .await
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

/// Every id of a list walked page by page with `limit`, following `next_cursor`.
async fn walk(api: &Api<'_>, admin: &str, query: &str, limit: u32) -> Vec<String> {
    let mut shown = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let path = match &cursor {
            None => format!("/v1/devices?{query}&limit={limit}"),
            Some(c) => format!("/v1/devices?{query}&limit={limit}&cursor={c}"),
        };
        let (status, page) = send(api.get(&path, admin)).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page_ids(&page).len() <= limit as usize);
        shown.extend(page_ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return shown,
        }
    }
    panic!("the list did not end: {shown:?}");
}

#[tokio::test]
async fn devices_carry_last_seen_and_list_by_it_with_search_and_keyset_cursors() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let shared = toaster_tests::api::Api::new(&app);
    let admin = api.tenant("acme").await;
    let globex = api.tenant("globex").await;
    for (tenant, id) in [
        ("acme", "sn-001"),
        ("acme", "sn-002"),
        ("acme", "sn-003"),
        ("acme", "gw-01"),
        ("acme", "gw-02"),
        ("globex", "sn-009"),
    ] {
        shared
            .sql(
                "INSERT INTO devices (tenant_id, device_id, model, channel) VALUES ($1, $2, 't1000', 'stable')",
                &[&tenant, &id],
            )
            .await;
    }
    // Never seen: null.
    let (status, page) = send(api.get("/v1/devices", &admin)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page_ids(&page),
        ["gw-01", "gw-02", "sn-001", "sn-002", "sn-003"]
    );
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["last_seen"].is_null())
    );

    // A batch sets it to the minute of receipt.
    let token = shared.device_token("acme", "sn-002");
    let post = |ts: u64| {
        send(api.post(
            "/v1/telemetry",
            &token,
            &json!({"readings": [{"metric": "temp_c", "ts": ts, "value": 21.5}]}),
        ))
    };
    let at = now() * 1000;
    let (status, body) = post(at).await;
    assert_eq!(status, 200, "{body}");
    let seen_of = |page: &Value, id: &str| -> Value {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["last_seen"].clone())
            .unwrap_or_else(|| panic!("{id} not listed: {page}"))
    };
    let (_, page) = send(api.get("/v1/devices?q=sn-002", &admin)).await;
    let seen = seen_of(&page, "sn-002");
    let seen = seen.as_str().unwrap_or_else(|| panic!("{page}"));
    assert!(seen.ends_with(":00.000Z"), "to the minute: {seen}");
    // Within a minute of now (the minute of receipt starts at most 60 s before it).
    let current = |sql: &'static str| holds(&app, sql);
    assert!(
        current(
            "SELECT last_seen_at = date_bin('1 minute', last_seen_at, timestamptz 'epoch') \
             AND last_seen_at > now() - interval '2 minutes' FROM devices WHERE device_id = 'sn-002'"
        )
        .await
    );
    // Written only when older than 60 s: a value 30 s old stays, one 2 minutes old moves.
    shared
        .sql(
            "UPDATE devices SET last_seen_at = now() - interval '30 seconds' WHERE device_id = 'sn-002'",
            &[],
        )
        .await;
    assert_eq!(post(at + 1).await.0, 200);
    assert!(
        current(
            "SELECT last_seen_at BETWEEN now() - interval '40 seconds' AND now() - interval '20 seconds' \
             FROM devices WHERE device_id = 'sn-002'"
        )
        .await,
        "a 30 s old last_seen was rewritten"
    );
    shared
        .sql(
            "UPDATE devices SET last_seen_at = now() - interval '2 minutes' WHERE device_id = 'sn-002'",
            &[],
        )
        .await;
    // A resend (nothing new stored) still says the device was seen.
    assert_eq!(post(at + 1).await.1["stored"], 0);
    assert!(
        current(
            "SELECT last_seen_at = date_bin('1 minute', now(), timestamptz 'epoch') \
             OR last_seen_at > now() - interval '70 seconds' FROM devices WHERE device_id = 'sn-002'"
        )
        .await,
        "a 2-minute-old last_seen was not rewritten"
    );

    // sort=last_seen: most recent first, ties by id, never seen last (by id).
    shared
        .sql(
            "UPDATE devices SET last_seen_at = date_bin('1 minute', now(), timestamptz 'epoch') - interval '1 hour' \
             WHERE tenant_id = 'acme' AND device_id IN ('sn-001', 'gw-01')",
            &[],
        )
        .await;
    let expected = ["sn-002", "gw-01", "sn-001", "gw-02", "sn-003"];
    for limit in [1, 2, 3, 5, 50] {
        assert_eq!(
            walk(&api, &admin, "sort=last_seen", limit).await,
            expected,
            "limit {limit}"
        );
        assert_eq!(
            walk(&api, &admin, "sort=id", limit).await,
            ["gw-01", "gw-02", "sn-001", "sn-002", "sn-003"],
            "limit {limit}"
        );
    }
    let (_, page) = send(api.get("/v1/devices?sort=last_seen", &admin)).await;
    assert_eq!(seen_of(&page, "gw-01"), seen_of(&page, "sn-001"));
    assert!(seen_of(&page, "sn-003").is_null());

    // q: ids containing the text, with the other filters and either sort.
    for (query, ids) in [
        ("q=sn-", vec!["sn-001", "sn-002", "sn-003"]),
        ("q=01", vec!["gw-01", "sn-001"]),
        ("q=01&sort=last_seen", vec!["gw-01", "sn-001"]),
        ("q=0&sort=last_seen&status=active", expected.to_vec()),
        ("q=.x", vec![]),
        ("q=sn-009", vec![]),
        ("q=-0&status=disabled", vec![]),
    ] {
        let (status, page) = send(api.get(&format!("/v1/devices?{query}"), &admin)).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(page_ids(&page), ids, "{query}");
    }
    assert_eq!(walk(&api, &admin, "q=0&sort=last_seen", 2).await, expected);
    // Another tenant sees its own only, and none of acme's last_seen.
    let (_, page) = send(api.get("/v1/devices?sort=last_seen", &globex)).await;
    assert_eq!(page_ids(&page), ["sn-009"]);
    assert!(page["items"][0]["last_seen"].is_null());

    // GET /v1/devices/{id} keeps the exact time of the latest reading.
    let (status, device) = send(api.get("/v1/devices/sn-002", &admin)).await;
    assert_eq!(status, 200, "{device}");
    assert!(device["last_seen"].is_string(), "{device}");

    // Bad input: 400 problems naming the parameter; one sort's cursor is not the other's.
    let (_, by_id) = send(api.get("/v1/devices?limit=1", &admin)).await;
    let (_, by_seen) = send(api.get("/v1/devices?limit=1&sort=last_seen", &admin)).await;
    let id_cursor = by_id["next_cursor"].as_str().unwrap().to_owned();
    let seen_cursor = by_seen["next_cursor"].as_str().unwrap().to_owned();
    let long = "a".repeat(129);
    for (query, name) in [
        ("q=".to_owned(), "q"),
        ("q=a%20b".to_owned(), "q"),
        ("q=a%2Fb".to_owned(), "q"),
        (format!("q={long}"), "q"),
        ("sort=name".to_owned(), "sort"),
        ("sort=".to_owned(), "sort"),
        ("sort=id&sort=last_seen".to_owned(), "sort"),
        (format!("sort=last_seen&cursor={id_cursor}"), "cursor"),
        (format!("cursor={seen_cursor}"), "cursor"),
        (format!("sort=id&cursor={seen_cursor}"), "cursor"),
    ] {
        let (status, problem) = send(api.get(&format!("/v1/devices?{query}"), &admin)).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["type"], "https://toaster.dev/problems/bad-request");
        assert!(
            problem["detail"].as_str().unwrap().contains(name),
            "{query}: {problem}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_audit_log_filters_by_action_prefix_target_and_actor() {
    let app = TestApp::start().await;
    let api = Api { app: &app };
    let admin = api.tenant("acme").await;
    let globex = api.tenant("globex").await;
    let key = DeviceKey::ed25519();
    api.register(&admin, "a1", &key).await;
    api.register(&admin, "a2", &key).await;
    let (status, body) =
        send(api.patch("/v1/devices/a1", &admin, &json!({"status": "disabled"}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        send(api.patch("/v1/devices/a2", &admin, &json!({"channel": "beta"}))).await;
    assert_eq!(status, 200, "{body}");
    // Another tenant's entries with the same target never show.
    api.register(&globex, "a1", &key).await;

    let entries = |body: &Value| -> Vec<(String, String)> {
        body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["target"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, t)| (a.to_string(), t.to_string()))
            .collect()
    };
    let device_entries = [
        ("device.updated", "a2"),
        ("device.disabled", "a1"),
        ("device.created", "a2"),
        ("device.created", "a1"),
    ];
    for (query, expected) in [
        (
            "action=device.created",
            vec![("device.created", "a2"), ("device.created", "a1")],
        ),
        ("action=device.", device_entries.to_vec()),
        ("action=device", vec![]),
        ("action=device.cre", vec![]),
        (
            "target=a1",
            vec![("device.disabled", "a1"), ("device.created", "a1")],
        ),
        (
            "action=device.&target=a1",
            vec![("device.disabled", "a1"), ("device.created", "a1")],
        ),
        (
            "action=device.&actor=alice%40example.com",
            device_entries.to_vec(),
        ),
        ("actor=nobody", vec![]),
        ("target=A1", vec![]),
    ] {
        let (status, body) = send(api.get(&format!("/v1/audit?{query}"), &admin)).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(entries(&body), pairs(&expected), "{query}");
    }
    // The filters page with the cursor.
    let mut shown = Vec::new();
    let mut path = "/v1/audit?action=device.&limit=1".to_owned();
    loop {
        let (status, body) = send(api.get(&path, &admin)).await;
        assert_eq!(status, 200, "{body}");
        shown.extend(entries(&body));
        match body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/audit?action=device.&limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(shown, pairs(&device_entries));
    let (_, body) = send(api.get("/v1/audit?target=a1", &globex)).await;
    assert_eq!(entries(&body), pairs(&[("device.created", "a1")]));

    let long = "a".repeat(65);
    for query in [
        "action=".to_owned(),
        "action=Device.created".to_owned(),
        "action=.device".to_owned(),
        "action=device%20created".to_owned(),
        format!("action={long}"),
        "target=".to_owned(),
        format!("target={}", "t".repeat(257)),
        "actor=".to_owned(),
        "actor=a%01b".to_owned(),
        "action=a&action=b".to_owned(),
        "verb=device.".to_owned(),
    ] {
        let (status, problem) = send(api.get(&format!("/v1/audit?{query}"), &admin)).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["type"], "https://toaster.dev/problems/bad-request");
    }
    app.stop().await;
}

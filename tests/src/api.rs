//! Requests to the app as a test makes them: [`send`] for the status and the JSON
//! body, and [`Api`] for a tenant's admin, its devices' tokens and SQL on the test's
//! database. Each test file adds what only it needs.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::AccessClaims;

use crate::TestApp;

/// Sends `request`; its status and JSON body (`Null` when the body is not JSON).
pub async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The app's API with bearer tokens, and the test database.
pub struct Api<'a> {
    pub app: &'a TestApp,
}

impl<'a> Api<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Api { app }
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.app.http().get(self.app.url(path)).bearer_auth(token)
    }

    pub fn post(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.app
            .http()
            .post(self.app.url(path))
            .bearer_auth(token)
            .json(body)
    }

    /// A JSON merge patch (`application/merge-patch+json`).
    pub fn merge_patch(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.app
            .http()
            .patch(self.app.url(path))
            .bearer_auth(token)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
    }

    /// Creates a tenant through the API (as the operator); an admin token for it.
    pub async fn tenant(&self, id: &str) -> String {
        let operator = self.app.operator_token();
        let (status, body) = send(self.post(
            "/v1/tenants",
            &operator,
            &json!({"id": id, "name": format!("Tenant {id}")}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        self.app.admin_token(id)
    }

    /// A token of `device` in `tenant` at key generation 1, as `POST /v1/auth/token`
    /// hands out.
    pub fn device_token(&self, tenant: &str, device: &str) -> String {
        let claims = AccessClaims::device(
            TenantId::parse(tenant).unwrap(),
            &DeviceId::parse(device).unwrap(),
            1,
        );
        self.app
            .signer
            .mint(&claims, Duration::from_secs(600))
            .unwrap()
    }

    /// Runs a statement on the test database; the rows it changed.
    pub async fn sql(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> u64 {
        self.app
            .db
            .client()
            .await
            .execute(sql, params)
            .await
            .expect("sql")
    }

    /// The `int8` a query answers (a `count(*)`).
    pub async fn count(&self, sql: &str) -> i64 {
        self.app
            .db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .expect("count")
            .get(0)
    }
}

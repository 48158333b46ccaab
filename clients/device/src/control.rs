//! Talking back: the device's state documents and its commands (docs/control.md).
//!
//! - [`Device::state`] reads `desired`, `reported` and the `delta` left to do; given
//!   the tag of the last read it answers `None` when nothing changed (the server
//!   answers that poll from its key-value store, so polling is cheap).
//! - [`Device::report_state`] merge-patches `reported` (RFC 7386: `null` deletes).
//! - [`Device::run_commands`] fetches the pending commands, hands each to a handler
//!   and posts its result; [`Device::command_loop`] does that every interval.
//!
//! Every call is resent after a lost answer, as telemetry is, which the server makes
//! safe: the same merge patch twice is the same document, a fetch gives the delivered
//! commands again, and the same result posted twice is accepted once.

use std::future::Future;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::device::Device;
use crate::error::Error;
use crate::transport::Answer;

/// A device's state as the server holds it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeviceState {
    /// What the device should be (set by its tenant's admins).
    pub desired: Map<String, Value>,
    pub desired_version: i64,
    /// What the device said it is.
    pub reported: Map<String, Value>,
    pub reported_version: i64,
    /// The members of `desired` that `reported` does not match yet.
    pub delta: Map<String, Value>,
    /// The entity tag to pass to the next [`Device::state`].
    #[serde(skip)]
    pub etag: Option<String>,
}

/// A command to run, oldest first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Command {
    pub id: String,
    pub name: String,
    pub parameters: Value,
    /// RFC 3339; a result after it is refused.
    pub expires_at: String,
}

/// What became of a command: its result, with an optional JSON output.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandOutcome {
    /// Done as asked.
    Succeeded(Option<Value>),
    /// Tried, and it did not work.
    Failed(Option<Value>),
    /// Not tried: the device will not or cannot (unknown name, bad parameters).
    Rejected(Option<Value>),
}

impl CommandOutcome {
    fn body(&self) -> Value {
        let (status, output) = match self {
            CommandOutcome::Succeeded(o) => ("succeeded", o),
            CommandOutcome::Failed(o) => ("failed", o),
            CommandOutcome::Rejected(o) => ("rejected", o),
        };
        match output {
            Some(output) => json!({"status": status, "output": output}),
            None => json!({"status": status}),
        }
    }
}

/// The answer's `ETag`.
fn etag(answer: &Answer) -> Option<String> {
    answer
        .headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The most commands one fetch asks for.
pub const COMMAND_PAGE: u32 = 20;

impl Device {
    /// The device's state (`GET /v1/device/state`). With `known`, the tag of the
    /// state last read, `Ok(None)` means it has not changed.
    pub async fn state(&self, known: Option<&str>) -> Result<Option<DeviceState>, Error> {
        const WHAT: &str = "read state";
        let url = self.config().url("/v1/device/state");
        let answer = self
            .call(WHAT, |client| {
                let request = client.request(Method::GET, &url);
                match known {
                    Some(tag) => request.header(IF_NONE_MATCH, tag),
                    None => request,
                }
            })
            .await?;
        if answer.status == 304 {
            return Ok(None);
        }
        let mut state: DeviceState = answer.json(WHAT)?;
        state.etag = etag(&answer);
        Ok(Some(state))
    }

    /// Merge-patches the device's `reported` document
    /// (`PATCH /v1/device/state/reported`); the state after it.
    pub async fn report_state(&self, patch: &Value) -> Result<DeviceState, Error> {
        const WHAT: &str = "report state";
        let url = self.config().url("/v1/device/state/reported");
        let body = serde_json::to_vec(patch).map_err(|e| Error::Config(e.to_string()))?;
        let answer = self
            .call(WHAT, |client| {
                client
                    .request(Method::PATCH, &url)
                    .header(CONTENT_TYPE, "application/merge-patch+json")
                    .body(body.clone())
            })
            .await?;
        let mut state: DeviceState = answer.json(WHAT)?;
        state.etag = etag(&answer);
        Ok(state)
    }

    /// The pending commands, oldest first, at most `limit` (`GET /v1/device/commands`).
    /// Each is `delivered` from now on; one whose result is not posted comes again in
    /// the next fetch.
    pub async fn fetch_commands(&self, limit: u32) -> Result<Vec<Command>, Error> {
        const WHAT: &str = "fetch commands";
        #[derive(Deserialize)]
        struct Page {
            items: Vec<Command>,
        }
        let url = self.config().url(&format!(
            "/v1/device/commands?limit={}",
            limit.clamp(1, 100)
        ));
        let answer = self
            .call(WHAT, |client| client.request(Method::GET, &url))
            .await?;
        Ok(answer.json::<Page>(WHAT)?.items)
    }

    /// Posts a command's result (`POST /v1/device/commands/{id}/result`). Posting the
    /// same result again is accepted; another one is refused (409).
    pub async fn post_result(&self, command: &str, outcome: &CommandOutcome) -> Result<(), Error> {
        const WHAT: &str = "post a command result";
        let url = self
            .config()
            .url(&format!("/v1/device/commands/{command}/result"));
        let body = outcome.body();
        self.call(WHAT, |client| client.post(&url).json(&body))
            .await?;
        Ok(())
    }

    /// One round: fetches the pending commands, runs `handler` on each in order and
    /// posts what it returned. Returns how many were handled.
    pub async fn run_commands<F, Fut>(&self, mut handler: F) -> Result<usize, Error>
    where
        F: FnMut(Command) -> Fut,
        Fut: Future<Output = CommandOutcome>,
    {
        let commands = self.fetch_commands(COMMAND_PAGE).await?;
        let handled = commands.len();
        for command in commands {
            let id = command.id.clone();
            let outcome = handler(command).await;
            self.post_result(&id, &outcome).await?;
        }
        Ok(handled)
    }

    /// [`run_commands`](Self::run_commands) every `every` (at once again after a full
    /// page), until a call fails in a way retrying would not fix.
    pub async fn command_loop<F, Fut>(&self, every: Duration, mut handler: F) -> Result<(), Error>
    where
        F: FnMut(Command) -> Fut,
        Fut: Future<Output = CommandOutcome>,
    {
        loop {
            let handled = self.run_commands(&mut handler).await?;
            if handled < COMMAND_PAGE as usize {
                tokio::time::sleep(every).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_the_result_bodies_the_server_takes() {
        assert_eq!(
            CommandOutcome::Succeeded(None).body(),
            json!({"status": "succeeded"})
        );
        assert_eq!(
            CommandOutcome::Rejected(Some(json!({"why": "unknown command"}))).body(),
            json!({"status": "rejected", "output": {"why": "unknown command"}})
        );
    }
}

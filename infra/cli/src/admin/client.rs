//! The HTTP side: requests to the public API with the bearer token, answers read as
//! JSON, refusals read as problem+json, and every failure sorted by the exit code a
//! script can act on ([`CliError::exit_code`]).

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// Why a command failed, by what a script should do about it.
#[derive(Debug)]
pub enum CliError {
    /// The command line or the local configuration is wrong: fix the invocation.
    Usage(String),
    /// The API answered 4xx: the request was understood and refused.
    Refused(Box<ApiError>),
    /// The server answered 5xx, or something that is not the API's answer.
    Server(Box<ApiError>),
    /// No answer: the server could not be reached, or did not answer in time.
    Unreachable(String),
}

impl CliError {
    /// 0 is success; see docs/cli.md.
    pub const REFUSED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAVAILABLE: u8 = 3;

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => Self::REFUSED,
            CliError::Usage(_) => Self::USAGE,
            CliError::Server(_) | CliError::Unreachable(_) => Self::UNAVAILABLE,
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage(message.into())
    }

    /// What is printed on stderr: never the token.
    pub fn render(&self) -> String {
        match self {
            CliError::Usage(message) => format!("error: {message}\n"),
            CliError::Unreachable(message) => format!("error: {message}\n"),
            CliError::Refused(api) | CliError::Server(api) => api.render(),
        }
    }
}

/// An answer that was not a success: its status and, when it is one, the problem.
#[derive(Debug)]
pub struct ApiError {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub problem: Option<Problem>,
    /// Seconds, from `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// `error: 422 Validation failed: <detail>` and one line per field error, with
    /// its JSON pointer into the request body.
    fn render(&self) -> String {
        let mut out = format!(
            "error: {} {} answered {}",
            self.method,
            self.path,
            self.status.as_u16()
        );
        match &self.problem {
            Some(problem) => {
                let _ = write!(out, " {}", one_line(&problem.title));
                if let Some(detail) = &problem.detail {
                    let _ = write!(out, ": {}", one_line(detail));
                }
                out.push('\n');
                for field in &problem.errors {
                    let pointer = if field.pointer.is_empty() {
                        "(the whole body)"
                    } else {
                        &field.pointer
                    };
                    let _ = writeln!(out, "  {}: {}", one_line(pointer), one_line(&field.detail));
                }
            }
            None => {
                let reason = self.status.canonical_reason().unwrap_or("");
                let _ = writeln!(out, " {reason} (not a problem+json answer)");
            }
        }
        if let Some(seconds) = self.retry_after {
            let _ = writeln!(out, "  retry after {seconds} s");
        }
        out
    }
}

/// An RFC 9457 problem as the API sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    pub title: String,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldError {
    pub pointer: String,
    pub detail: String,
}

/// Server text shown on a terminal: control characters (a newline, an escape
/// sequence) become spaces, so an answer cannot rewrite the screen.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The API at one base URL, with one bearer token.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

/// How long to wait for a connection, and for a whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    pub fn new(base: Url, token: String) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("toaster-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client { http, base, token })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `GET`: the answer's JSON.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.send(Method::GET, segments, query, None)
            .await?
            .ok_or_else(|| self.not_json(Method::GET, segments, StatusCode::NO_CONTENT))
    }

    /// A request with an optional JSON body: the answer's JSON, or `None` for an
    /// answer without a body (204).
    pub async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, CliError> {
        let url = self.url(segments, query)?;
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| self.not_json(method, segments, status));
        }
        let error = Box::new(ApiError {
            method,
            path: url.path().to_owned(),
            status,
            problem: serde_json::from_slice(&bytes).ok(),
            retry_after,
        });
        if status.is_client_error() {
            Err(CliError::Refused(error))
        } else {
            Err(CliError::Server(error))
        }
    }

    /// The base URL with `segments` appended, each percent-encoded as one segment
    /// (a device id with `/` or `?` stays one id), and the query.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, CliError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| CliError::usage(format!("{} cannot be a base URL", self.base)))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    fn unreachable(&self, error: &reqwest::Error) -> CliError {
        let why = if error.is_timeout() {
            "no answer in time".to_owned()
        } else if error.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the connection failed".to_owned()
        };
        // The source chain names the cause (refused, DNS, TLS); the URL has no token.
        let mut cause = String::new();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            cause = inner.to_string();
            source = inner.source();
        }
        let cause = if cause.is_empty() {
            String::new()
        } else {
            format!(" ({cause})")
        };
        CliError::Unreachable(format!(
            "{why} to {}{cause}: is Toaster running there? (--server, TOASTER_SERVER, `toaster login`)",
            self.base
        ))
    }

    fn not_json(&self, method: Method, segments: &[&str], status: StatusCode) -> CliError {
        CliError::Server(Box::new(ApiError {
            method,
            path: format!("/{}", segments.join("/")),
            status,
            problem: Some(Problem {
                title: "Unexpected answer".to_owned(),
                detail: Some(format!(
                    "{} did not answer with JSON: is it a Toaster server?",
                    self.base
                )),
                errors: Vec::new(),
            }),
            retry_after: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(problem: Option<Problem>) -> CliError {
        CliError::Refused(Box::new(ApiError {
            method: Method::POST,
            path: "/v1/devices".into(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            problem,
            retry_after: None,
        }))
    }

    #[test]
    fn a_problem_is_shown_with_each_field_error() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "https://toaster.dev/problems/validation", "title": "Validation failed",
            "status": 422, "detail": "the body is invalid",
            "errors": [{"pointer": "/tags/0", "detail": "must match ^[a-z]+$"},
                       {"pointer": "", "detail": "must be an object"}],
        }))
        .unwrap();
        let error = refused(Some(problem));
        assert_eq!(error.exit_code(), 1);
        assert_eq!(
            error.render(),
            "error: POST /v1/devices answered 422 Validation failed: the body is invalid\n  \
             /tags/0: must match ^[a-z]+$\n  (the whole body): must be an object\n"
        );
    }

    #[test]
    fn an_answer_without_a_problem_says_so() {
        let text = refused(None).render();
        assert!(
            text.contains("422 Unprocessable Entity (not a problem+json answer)"),
            "{text}"
        );
    }

    #[test]
    fn server_text_cannot_move_the_cursor() {
        assert_eq!(one_line("a\nb\u{1b}[2Jc"), "a b [2Jc");
    }

    #[test]
    fn exit_codes_sort_failures() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::Unreachable("x".into()).exit_code(), 3);
        let server = CliError::Server(Box::new(ApiError {
            method: Method::GET,
            path: "/".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            problem: None,
            retry_after: Some(5),
        }));
        assert_eq!(server.exit_code(), 3);
        assert!(server.render().contains("retry after 5 s"));
    }

    #[test]
    fn segments_are_escaped_one_by_one() {
        let client = Client::new(
            Url::parse("http://127.0.0.1:3000/api/").unwrap(),
            "t".into(),
        )
        .unwrap();
        let url = client
            .url(
                &["v1", "devices", "a/b?c"],
                &[("tag", "site=berlin".into())],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:3000/api/v1/devices/a%2Fb%3Fc?tag=site%3Dberlin"
        );
    }
}

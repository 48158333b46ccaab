//! Reading a JSON request body into a typed value, with the API's status codes
//! (schemas/openapi.yaml):
//!
//! | problem | status |
//! |---------|--------|
//! | `Content-Type` is not `application/json` (parameters such as `charset` allowed) | 415 |
//! | the body is longer than the limit | 413 |
//! | not JSON at all, not UTF-8, trailing garbage | 400 |
//! | JSON, but a field is missing, unknown, of the wrong type or invalid | 422, with a JSON pointer |
//! | an array (or anything else) where the schema has an object, at any depth | 422, "must be an object" |
//! | `null` for any field (no request schema allows it) | 422, "must not be null" |
//!
//! Request types derive `Deserialize` with `#[serde(deny_unknown_fields)]` and use
//! `toaster_core` newtypes (`DeviceId`, `Model`, ...) for their fields, so validation
//! happens while parsing and a value that exists is valid. Parsing stops at the first
//! bad field, so a 422 carries one entry in `errors`. Bodies are read through
//! [`strict::Strict`], which refuses the shapes serde's derives accept beyond the
//! schemas: a struct as a positional array, an enum as `{"variant": null}`, and `null`
//! for an optional field (absent is how a field is left out).
//!
//! Error details never echo the input: serde's messages that quote the value
//! (`invalid type: string "…", expected u32`) are reduced to what was expected.

use serde::de::DeserializeOwned;
use spin_sdk::http::Request;
use toaster_core::problem::{FieldError, Problem};

pub mod strict;

/// The default bound for request bodies of the identity endpoints.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;

/// Longest detail or pointer put in a response.
const MAX_ECHO: usize = 200;

/// Reads the request body as a `T`, bounded by [`DEFAULT_MAX_BYTES`].
pub fn json<T: DeserializeOwned>(req: &Request) -> Result<T, Problem> {
    json_limited(req, DEFAULT_MAX_BYTES)
}

/// Reads the request body as a `T`, bounded by `max_bytes`.
pub fn json_limited<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T, Problem> {
    let content_type = req.header("content-type").and_then(|v| v.as_str());
    parse(content_type, req.body(), max_bytes)
}

/// [`json_limited`] on its parts, for tests and for bodies read some other way.
pub fn parse<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
    max_bytes: usize,
) -> Result<T, Problem> {
    if !content_type.is_some_and(is_json) {
        return Err(Problem::unsupported_media_type("application/json"));
    }
    if body.len() > max_bytes {
        return Err(Problem::payload_too_large(max_bytes));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T =
        serde_path_to_error::deserialize(strict::Strict(&mut deserializer)).map_err(|e| {
            let pointer = pointer(e.path());
            field_problem(pointer, e.into_inner())
        })?;
    deserializer
        .end()
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {}", where_(&e))))?;
    Ok(value)
}

/// `application/json`, in any case, with or without parameters.
pub fn is_json(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
}

fn field_problem(pointer: String, error: serde_json::Error) -> Problem {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            Problem::bad_request(format!("the body is not valid JSON: {}", where_(&error)))
        }
        Category::Data => {
            let message = message(&error);
            let (pointer, detail) = describe(pointer, &message);
            Problem::unprocessable(vec![FieldError::new(truncate(&pointer), truncate(&detail))])
        }
    }
}

/// `line 3 column 7`, without the error message (which may quote the input).
fn where_(error: &serde_json::Error) -> String {
    format!("line {} column {}", error.line(), error.column())
}

/// serde's message without serde_json's ` at line L column C` suffix.
fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Rewrites serde's messages so that none quotes the input, and points missing
/// fields at the field itself rather than its parent.
fn describe(pointer: String, message: &str) -> (String, String) {
    let expected = message
        .split_once(", expected ")
        .map(|(_, expected)| expected.to_owned());
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        return (
            format!("{pointer}/{}", escape(field)),
            "is required".to_owned(),
        );
    }
    if message.starts_with("unknown field `") {
        return (pointer, "is not a known field".to_owned());
    }
    if message.starts_with("unknown variant `") {
        let detail = match expected {
            Some(expected) => format!("must be {expected}"),
            None => "is not an allowed value".to_owned(),
        };
        return (pointer, detail);
    }
    if message.starts_with("invalid type: null,") {
        return (pointer, "must not be null".to_owned());
    }
    if expected.as_deref() == Some(strict::OBJECT) {
        return (pointer, format!("must be {}", strict::OBJECT));
    }
    if message.starts_with("invalid type: ") {
        let detail = match expected {
            Some(expected) => format!("has the wrong type; expected {expected}"),
            None => "has the wrong type".to_owned(),
        };
        return (pointer, detail);
    }
    if message.starts_with("invalid value: ") {
        let detail = match expected {
            Some(expected) => format!("is out of range; expected {expected}"),
            None => "is not an allowed value".to_owned(),
        };
        return (pointer, detail);
    }
    // `invalid length`, `duplicate field` and our own newtypes' messages
    // (`toaster_core::ids::ParseError`, which never repeats the input).
    (pointer, message.to_owned())
}

fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&escape(key));
            }
            Segment::Enum { variant } => {
                pointer.push('/');
                pointer.push_str(&escape(variant));
            }
            Segment::Unknown => pointer.push_str("/?"),
        }
    }
    pointer
}

/// RFC 6901 escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_ECHO {
        return text.to_owned();
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use toaster_core::ids::DeviceId;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        id: DeviceId,
        quota: u32,
        #[serde(default)]
        tags: Vec<String>,
        nested: Option<Nested>,
        level: Option<Level>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Level {
        Low,
        High,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        flag: bool,
    }

    const CT: Option<&str> = Some("application/json");

    fn run(body: &str) -> Result<Body, Problem> {
        parse(CT, body.as_bytes(), 1024)
    }

    fn one_error(body: &str) -> FieldError {
        let problem = run(body).unwrap_err();
        assert_eq!(problem.status, 422, "{problem:?}");
        assert_eq!(problem.errors.len(), 1);
        problem.errors[0].clone()
    }

    #[test]
    fn a_valid_body_parses() {
        let body = run(r#"{"id":"d1","quota":3,"nested":{"flag":true}}"#).unwrap();
        assert_eq!(body.quota, 3);
    }

    #[test]
    fn media_type_must_be_json() {
        for ct in [None, Some("text/plain"), Some("application/jsonx")] {
            let problem = parse::<Body>(ct, b"{}", 1024).unwrap_err();
            assert_eq!(problem.status, 415, "{ct:?}");
        }
        assert!(is_json("Application/JSON; charset=utf-8"));
    }

    #[test]
    fn oversized_bodies_are_413() {
        let body = format!(r#"{{"id":"{}","quota":1}}"#, "a".repeat(2000));
        assert_eq!(run(&body).unwrap_err().status, 413);
    }

    #[test]
    fn malformed_json_is_400_and_says_where_not_what() {
        for body in [
            "",
            "{",
            "{\"id\":",
            "nope",
            "{\"id\":\"d1\",\"quota\":1} trailing",
        ] {
            let problem = run(body).unwrap_err();
            assert_eq!(problem.status, 400, "{body:?}");
            assert!(!problem.detail.unwrap().contains("nope"));
        }
    }

    #[test]
    fn wrong_types_point_at_the_field_without_echoing_it() {
        let error = one_error(r#"{"id":"d1","quota":"DROP TABLE devices"}"#);
        assert_eq!(error.pointer, "/quota");
        assert!(!error.detail.contains("DROP"), "{}", error.detail);
        assert!(error.detail.contains("u32"), "{}", error.detail);

        let error = one_error(r#"{"id":"d1","quota":1,"tags":["a",7]}"#);
        assert_eq!(error.pointer, "/tags/1");

        let error = one_error(r#"{"id":"d1","quota":1,"nested":{"flag":"yes"}}"#);
        assert_eq!(error.pointer, "/nested/flag");

        let error = one_error(r#"{"id":"d1","quota":-1}"#);
        assert_eq!(error.pointer, "/quota");
        assert!(!error.detail.contains("-1"), "{}", error.detail);
    }

    #[test]
    fn newtype_violations_keep_their_message() {
        let body = format!(r#"{{"id":"{}","quota":1}}"#, "x".repeat(500));
        let error = one_error(&body);
        assert_eq!(error.pointer, "/id");
        assert!(error.detail.contains("at most 128"), "{}", error.detail);
    }

    #[test]
    fn missing_fields_point_at_the_field() {
        let error = one_error(r#"{"id":"d1"}"#);
        assert_eq!(error.pointer, "/quota");
        assert_eq!(error.detail, "is required");
        let error = one_error(r#"{"id":"d1","quota":1,"nested":{}}"#);
        assert_eq!(error.pointer, "/nested/flag");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = one_error(r#"{"id":"d1","quota":1,"a/b~":1}"#);
        assert_eq!(error.pointer, "/a~1b~0");
        assert_eq!(error.detail, "is not a known field");
    }

    #[test]
    fn a_struct_must_be_an_object_at_every_depth() {
        // serde's derive reads a struct from an array, its fields by position.
        for body in [r#"["d1", 3, [], null, null]"#, "[]", "3", r#""d1""#] {
            let error = one_error(body);
            assert_eq!(error.pointer, "", "{body}");
            assert_eq!(error.detail, "must be an object", "{body}");
        }
        let error = one_error(r#"{"id":"d1","quota":1,"nested":[true]}"#);
        assert_eq!(error.pointer, "/nested");
        assert_eq!(error.detail, "must be an object");
        // Arrays stay arrays.
        let body = run(r#"{"id":"d1","quota":1,"tags":["a","b"]}"#).unwrap();
        assert_eq!(body.tags, ["a", "b"]);
    }

    #[test]
    fn null_is_refused_for_every_field() {
        for (body, pointer) in [
            (r#"{"id":"d1","quota":1,"nested":null}"#, "/nested"),
            (r#"{"id":"d1","quota":1,"level":null}"#, "/level"),
            (r#"{"id":null,"quota":1}"#, "/id"),
            (r#"{"id":"d1","quota":null}"#, "/quota"),
            (r#"{"id":"d1","quota":1,"tags":null}"#, "/tags"),
            (r#"{"id":"d1","quota":1,"tags":[null]}"#, "/tags/0"),
            (
                r#"{"id":"d1","quota":1,"nested":{"flag":null}}"#,
                "/nested/flag",
            ),
        ] {
            let error = one_error(body);
            assert_eq!(error.pointer, pointer, "{body}");
            assert_eq!(error.detail, "must not be null", "{body}");
        }
        // Absent is how an optional field is left out.
        let body = run(r#"{"id":"d1","quota":1}"#).unwrap();
        assert!(body.nested.is_none() && body.level.is_none());
    }

    #[test]
    fn an_enum_is_a_string() {
        let body = run(r#"{"id":"d1","quota":1,"level":"high"}"#).unwrap();
        assert!(matches!(body.level, Some(Level::High)));
        // serde's derive also reads a unit variant from `{"high": null}`.
        for level in [r#"{"high":null}"#, r#"["high"]"#, "1"] {
            let error = one_error(&format!(r#"{{"id":"d1","quota":1,"level":{level}}}"#));
            assert_eq!(error.pointer, "/level", "{level}");
            assert_eq!(
                error.detail, "has the wrong type; expected `low` or `high`",
                "{level}"
            );
        }
        let error = one_error(r#"{"id":"d1","quota":1,"level":"middle"}"#);
        assert_eq!(error.pointer, "/level");
        assert_eq!(error.detail, "must be `low` or `high`");
    }

    #[test]
    fn long_keys_are_truncated() {
        let body = format!(r#"{{"id":"d1","quota":1,"{}":1}}"#, "k".repeat(900));
        let error = one_error(&body);
        assert!(error.pointer.len() < 300);
    }
}

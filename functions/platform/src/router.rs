//! The one routing skeleton of every component: the path split into segments, a
//! component's table matching them to a [`Resource`] and its methods, 404 for a path
//! no route matches and 405 with the `Allow` header (RFC 9110 §15.5.6) for a known
//! path asked with a method it does not answer.
//!
//! ```ignore
//! fn route(req: &Request) -> Response {
//!     router::route(req, |path, on| match path {
//!         ["v1", "devices"] => Some(on.post(|| devices::create(req)).get(|| devices::list(req))),
//!         ["v1", "devices", id] => Some(on.get(|| devices::get(req, id))),
//!         _ => None,
//!     })
//! }
//! ```
//!
//! Paths are matched on the full request path without its query; one trailing `/` is
//! ignored. A handler runs only if its method is the request's.

use spin_sdk::http::{Method, Request, Response};
use toaster_core::problem::{Methods, Problem};

use crate::respond;

/// What a handler returns.
pub type Outcome = Result<Response, Problem>;

/// The methods one path answers, and what the handler of the one asked for returned
/// (an [`Outcome`], or for an async component a future of one).
pub struct Resource<'r, T = Outcome> {
    method: &'r Method,
    allow: Methods,
    outcome: Option<T>,
}

impl<'r, T> Resource<'r, T> {
    /// A resource asked for with `method`, answering no method yet.
    pub fn new(method: &'r Method) -> Self {
        Self {
            method,
            allow: Methods::NONE,
            outcome: None,
        }
    }

    /// Answers GET with `handler`.
    pub fn get(self, handler: impl FnOnce() -> T) -> Self {
        self.on(Method::Get, handler)
    }

    /// Answers POST with `handler`.
    pub fn post(self, handler: impl FnOnce() -> T) -> Self {
        self.on(Method::Post, handler)
    }

    /// Answers PUT with `handler`.
    pub fn put(self, handler: impl FnOnce() -> T) -> Self {
        self.on(Method::Put, handler)
    }

    /// Answers PATCH with `handler`.
    pub fn patch(self, handler: impl FnOnce() -> T) -> Self {
        self.on(Method::Patch, handler)
    }

    /// Answers DELETE with `handler`.
    pub fn delete(self, handler: impl FnOnce() -> T) -> Self {
        self.on(Method::Delete, handler)
    }

    fn on(mut self, method: Method, handler: impl FnOnce() -> T) -> Self {
        if self.outcome.is_none() && *self.method == method {
            self.outcome = Some(handler());
        }
        let name = match method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            // The builders above pass only these five.
            _ => "DELETE",
        };
        if let Some(named) = Methods::named(name) {
            self.allow = self.allow.union(named);
        }
        self
    }

    /// The methods this resource answers.
    pub fn allow(&self) -> Methods {
        self.allow
    }

    /// What the handler returned, or 405 naming the methods that are answered.
    pub fn finish(self) -> Result<T, Problem> {
        let allow = self.allow;
        self.outcome
            .ok_or_else(|| Problem::method_not_allowed(allow))
    }
}

/// The segments of `path` after the leading `/`, one trailing `/` ignored:
/// `/v1/devices/` → `["v1", "devices"]`.
pub fn segments(path: &str) -> Vec<&str> {
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').skip(1).collect()
}

/// Routes `method` on `path` through `table`: what the matching resource's handler
/// returned, 404 when the table has no resource for the path, 405 with `Allow` when the
/// resource does not answer the method.
pub fn dispatch<'r, T>(
    method: &'r Method,
    path: &str,
    table: impl FnOnce(&[&str], Resource<'r, T>) -> Option<Resource<'r, T>>,
) -> Result<T, Problem> {
    match table(&segments(path), Resource::new(method)) {
        Some(resource) => resource.finish(),
        None => Err(respond::no_route_problem(method, path)),
    }
}

/// [`dispatch`] for a whole request, rendered as the response.
pub fn route<'r>(
    req: &'r Request,
    table: impl FnOnce(&[&str], Resource<'r>) -> Option<Resource<'r>>,
) -> Response {
    respond::outcome(dispatch(req.method(), req.path(), table).and_then(|outcome| outcome))
}

/// Percent-decodes one path segment; `None` if an escape is malformed or the result is
/// not UTF-8. Identifiers are ASCII, so a client that escapes `:` as `%3A` still names
/// the same resource. `+` stays `+` (it means a space only in a query string).
pub fn path_segment(raw: &str) -> Option<String> {
    crate::query::percent_decode(raw, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &'static str) -> Outcome {
        Ok(Response::new(200, body))
    }

    fn table<'r>(path: &[&str], on: Resource<'r>) -> Option<Resource<'r>> {
        match path {
            ["v1", "things"] => Some(on.post(|| ok("create")).get(|| ok("list"))),
            ["v1", "things", id] => {
                let id = id.to_string();
                Some(
                    on.get(move || Ok(Response::new(200, id)))
                        .delete(|| ok("delete")),
                )
            }
            _ => None,
        }
    }

    fn run(method: Method, path: &str) -> Response {
        respond::outcome(dispatch(&method, path, table).and_then(|outcome| outcome))
    }

    fn body(response: &Response) -> String {
        String::from_utf8_lossy(response.body()).into_owned()
    }

    #[test]
    fn the_method_picks_the_handler() {
        assert_eq!(body(&run(Method::Post, "/v1/things")), "create");
        assert_eq!(body(&run(Method::Get, "/v1/things")), "list");
        assert_eq!(body(&run(Method::Get, "/v1/things/")), "list");
        assert_eq!(body(&run(Method::Get, "/v1/things/t1")), "t1");
        assert_eq!(body(&run(Method::Delete, "/v1/things/t1")), "delete");
    }

    #[test]
    fn a_known_path_with_another_method_is_405_with_allow() {
        let response = run(Method::Put, "/v1/things");
        assert_eq!(*response.status(), 405);
        assert_eq!(
            response.header("allow").and_then(|v| v.as_str()),
            Some("GET, POST")
        );
        let response = run(Method::Patch, "/v1/things/t1");
        assert_eq!(*response.status(), 405);
        assert_eq!(
            response.header("allow").and_then(|v| v.as_str()),
            Some("GET, DELETE")
        );
    }

    #[test]
    fn an_unknown_path_is_404_whatever_the_method() {
        for method in [Method::Get, Method::Put] {
            let response = run(method, "/v1/nothing");
            assert_eq!(*response.status(), 404);
            assert_eq!(response.header("allow"), None);
        }
        assert_eq!(*run(Method::Get, "/v1/things/a/b").status(), 404);
    }

    #[test]
    fn only_the_asked_handler_runs() {
        let mut ran = Vec::new();
        let _ = Resource::<Outcome>::new(&Method::Get)
            .post(|| {
                ran.push("post");
                ok("")
            })
            .finish();
        assert!(ran.is_empty());
    }

    #[test]
    fn segments_drop_one_trailing_slash() {
        assert_eq!(segments("/v1/a/"), ["v1", "a"]);
        assert_eq!(segments("/v1/a"), ["v1", "a"]);
        assert_eq!(segments("/"), [""; 0]);
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(path_segment("sn%3A1").as_deref(), Some("sn:1"));
        assert_eq!(path_segment("plain").as_deref(), Some("plain"));
        assert_eq!(path_segment("a+b").as_deref(), Some("a+b"));
        for bad in ["%FF", "%", "%2", "%zz"] {
            assert_eq!(path_segment(bad), None, "{bad}");
        }
    }
}

//! HTTP routing as Spin 4 does it (its router is the `routefinder` crate), for the
//! routes this host supports: exact routes, and trailing wildcards `/prefix/...`
//! (also written `/prefix/*`) which also match `/prefix` itself. The most specific
//! route wins: an exact route over any wildcard, a longer wildcard prefix over a
//! shorter one. As in Spin, leading and trailing slashes of the request path are
//! ignored when matching (`/exact/` is `/exact`), and one trailing slash of a route
//! is dropped (`/exact/` is `/exact`).
//!
//! Spin also has `:name` parameters (one path segment, `.` ending it too; a route
//! with parameters ranks below exact segments and above wildcards, segment by segment
//! from the left). This host refuses them, and anything else it would match
//! differently (docs/spin-differences.draft.md).
//!
//! Also builds the `spin-*` request headers components rely on (spin-sdk's Router
//! reads `spin-path-info`).

use anyhow::{Context, bail};
use http::{HeaderName, HeaderValue};

#[derive(Debug, Clone)]
pub struct Router {
    /// Sorted most specific first, so the first match wins.
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    raw: String,
    pattern: Pattern,
    component: String,
    headers: RouteHeaders,
}

/// The `spin-*` header values a route gives every request it matches, made once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteHeaders {
    /// `spin-raw-component-route`: the route as written.
    raw: HeaderValue,
    /// `spin-matched-route`: the route without one trailing `/` (`""` for `/`).
    matched: HeaderValue,
    /// `spin-component-route`: the route as written, less a trailing `/...`.
    component: HeaderValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// The path without leading or trailing slashes; empty for `/`.
    Exact(String),
    /// The prefix without leading slash and trailing `/...`; empty for the catch-all `/...`.
    Wildcard(String),
}

/// What a request matched, and the values of the `spin-*` headers derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub component: String,
    /// The rest of the path after the component route: `spin-path-info`.
    pub path_info: String,
    headers: RouteHeaders,
}

impl RouteMatch {
    /// The route as written in the manifest: `spin-raw-component-route`.
    pub fn raw_route(&self) -> &str {
        // Made from a `&str` by `Router::new`, so always valid UTF-8.
        self.headers.raw.to_str().unwrap_or_default()
    }

    /// The route as Spin normalises it: `spin-matched-route`.
    pub fn matched_route(&self) -> &str {
        self.headers.matched.to_str().unwrap_or_default()
    }

    /// The route without its `/...` wildcard: `spin-component-route`.
    pub fn component_route(&self) -> &str {
        self.headers.component.to_str().unwrap_or_default()
    }
}

impl Router {
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> anyhow::Result<Router> {
        let mut out: Vec<Route> = Vec::new();
        for (raw, component) in routes {
            let pattern = parse(raw).with_context(|| {
                format!("[[trigger.http]] route {raw:?} (component {component:?})")
            })?;
            if let Some(dup) = out.iter().find(|r| r.pattern == pattern) {
                bail!(
                    "route {raw:?} (component {component:?}) duplicates route {:?} (component {:?})",
                    dup.raw,
                    dup.component
                );
            }
            let header = |value: &str| {
                HeaderValue::from_str(value)
                    .with_context(|| format!("route {raw:?} cannot be sent in a spin-* header"))
            };
            let matched = raw.strip_suffix('/').unwrap_or(raw);
            let component_route = raw.strip_suffix("/...").unwrap_or(raw);
            out.push(Route {
                headers: RouteHeaders {
                    raw: header(raw)?,
                    matched: header(matched)?,
                    component: header(component_route)?,
                },
                raw: raw.to_string(),
                pattern,
                component: component.to_string(),
            });
        }
        out.sort_by_key(|r| match &r.pattern {
            Pattern::Exact(p) => (0, usize::MAX - p.len()),
            Pattern::Wildcard(p) => (1, usize::MAX - p.len()),
        });
        Ok(Router { routes: out })
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        // Spin's router ignores the path's leading and trailing slashes.
        let trimmed = path.trim_start_matches('/').trim_end_matches('/');
        self.routes.iter().find_map(|r| {
            let path_info = match &r.pattern {
                Pattern::Exact(p) if p == trimmed => String::new(),
                Pattern::Exact(_) => return None,
                Pattern::Wildcard(prefix) => {
                    let rest = trimmed.strip_prefix(prefix.as_str())?;
                    // The wildcard's capture: what follows the prefix and one `/`.
                    let captured = if prefix.is_empty() || rest.is_empty() {
                        rest
                    } else {
                        rest.strip_prefix('/')?
                    };
                    // Spin puts back the slashes its router dropped: one before a
                    // non-empty capture, and one after if the path ended with one.
                    match (captured.is_empty(), path.ends_with('/')) {
                        (true, false) => String::new(),
                        (true, true) => "/".to_string(),
                        (false, false) => format!("/{captured}"),
                        (false, true) => format!("/{captured}/"),
                    }
                }
            };
            Some(RouteMatch {
                component: r.component.clone(),
                path_info,
                headers: r.headers.clone(),
            })
        })
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.component.as_str())
    }
}

/// Routes under this prefix are answered by Spin itself and never reach a component.
const SPIN_WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

fn parse(raw: &str) -> anyhow::Result<Pattern> {
    if !raw.starts_with('/') {
        bail!("a route must start with '/'");
    }
    // Spin drops one trailing slash, then reads a trailing `/...` or `/*` as a wildcard.
    let route = raw.strip_suffix('/').unwrap_or(raw);
    let (body, wildcard) = match route
        .strip_suffix("/...")
        .or_else(|| route.strip_suffix("/*"))
    {
        Some(prefix) => (prefix, true),
        None => (route, false),
    };
    if route.starts_with(SPIN_WELL_KNOWN_PREFIX) {
        bail!("routes under {SPIN_WELL_KNOWN_PREFIX} are reserved: Spin answers them itself");
    }
    let body = body.trim_start_matches('/').trim_end_matches('/');
    if body.contains("...") {
        bail!("`...` may only end a route, as `/...`");
    }
    for segment in body.split(['/', '.']) {
        if segment.starts_with(':') {
            bail!("`:name` route parameters are not supported by the toaster host");
        }
        if segment.starts_with('*') {
            bail!("a wildcard may only end a route, as `/...`");
        }
    }
    if body.split('/').any(str::is_empty) && !body.is_empty() {
        bail!("a route must not contain an empty segment (`//`)");
    }
    Ok(if wildcard {
        Pattern::Wildcard(body.to_string())
    } else {
        Pattern::Exact(body.to_string())
    })
}

/// The names of the `spin-*` headers, checked at compile time (a name made from a
/// string at run time is parsed on every request).
pub mod spin_header {
    use http::HeaderName;

    pub const FULL_URL: HeaderName = HeaderName::from_static("spin-full-url");
    pub const PATH_INFO: HeaderName = HeaderName::from_static("spin-path-info");
    pub const MATCHED_ROUTE: HeaderName = HeaderName::from_static("spin-matched-route");
    pub const BASE_PATH: HeaderName = HeaderName::from_static("spin-base-path");
    pub const RAW_COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-raw-component-route");
    pub const COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-component-route");
    pub const CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");
}

/// The `spin-*` headers for one request. Clients cannot set these: the server strips
/// any incoming `spin-*` header before adding its own. A value that cannot be a header
/// (a path with bytes a header may not carry) is left out, as before.
pub fn spin_headers(
    m: &RouteMatch,
    full_url: &str,
    client_addr: std::net::SocketAddr,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    let full_url = HeaderValue::from_str(full_url).ok();
    let path_info = HeaderValue::from_str(&m.path_info).ok();
    let client_addr = HeaderValue::from_str(&client_addr.to_string()).ok();
    [
        (spin_header::FULL_URL, full_url),
        (spin_header::PATH_INFO, path_info),
        (spin_header::MATCHED_ROUTE, Some(m.headers.matched.clone())),
        (spin_header::BASE_PATH, Some(HeaderValue::from_static("/"))),
        (
            spin_header::RAW_COMPONENT_ROUTE,
            Some(m.headers.raw.clone()),
        ),
        (
            spin_header::COMPONENT_ROUTE,
            Some(m.headers.component.clone()),
        ),
        (spin_header::CLIENT_ADDR, client_addr),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new([
            ("/...", "root"),
            ("/api/...", "api"),
            ("/api/devices/...", "devices"),
            ("/api/devices/special", "special"),
            ("/exact", "exact"),
        ])
        .unwrap()
    }

    #[test]
    fn most_specific_route_wins() {
        let r = router();
        let c = |p: &str| r.route(p).map(|m| m.component);
        assert_eq!(c("/api/devices/special").as_deref(), Some("special"));
        assert_eq!(c("/api/devices/special/x").as_deref(), Some("devices"));
        assert_eq!(c("/api/devices/7").as_deref(), Some("devices"));
        assert_eq!(c("/api/devices").as_deref(), Some("devices"));
        assert_eq!(c("/api/devicesX").as_deref(), Some("api"));
        assert_eq!(c("/api").as_deref(), Some("api"));
        assert_eq!(c("/exact").as_deref(), Some("exact"));
        assert_eq!(c("/exact/more").as_deref(), Some("root"));
        assert_eq!(c("/").as_deref(), Some("root"));
    }

    #[test]
    fn no_route_means_none() {
        let r = Router::new([("/only", "a"), ("/p/...", "b")]).unwrap();
        assert!(r.route("/other").is_none());
        assert!(r.route("/only/x").is_none());
        assert!(r.route("/px").is_none());
    }

    #[test]
    fn path_info_is_relative_to_the_component_route() {
        let r = router();
        let m = r.route("/api/devices/7/keys").unwrap();
        assert_eq!(m.path_info, "/7/keys");
        assert_eq!(m.component_route(), "/api/devices");
        assert_eq!(m.raw_route(), "/api/devices/...");
        assert_eq!(r.route("/api/devices").unwrap().path_info, "");
        assert_eq!(r.route("/exact").unwrap().path_info, "");
        assert_eq!(r.route("/x/y").unwrap().path_info, "/x/y");
    }

    #[test]
    fn duplicates_and_unsupported_patterns_are_refused() {
        assert!(Router::new([("/a/...", "x"), ("/a/...", "y")]).is_err());
        assert!(Router::new([("/a/...", "x"), ("/a/*", "y")]).is_err());
        assert!(Router::new([("/a", "x"), ("/a/", "y")]).is_err());
        for bad in [
            "a",
            "/a/:id",
            "/:id/...",
            "/files/name.:ext",
            "/a/*/b",
            "/a/*rest",
            "/a/.../b",
            "/a...",
            "/a//b",
            "/.well-known/spin/...",
            "/.well-known/spin/info",
        ] {
            let err = Router::new([(bad, "x")]).unwrap_err();
            assert!(format!("{err:#}").contains(bad), "{bad}: {err:#}");
        }
        // What Spin reads as plain text is plain text here too.
        let r = Router::new([("/a:b", "x"), ("/c*d", "y"), ("/.well-known/spin", "z")]).unwrap();
        assert_eq!(r.route("/a:b").unwrap().component, "x");
        assert_eq!(r.route("/c*d").unwrap().component, "y");
        assert_eq!(r.route("/.well-known/spin").unwrap().component, "z");
    }

    #[test]
    fn slashes_around_the_path_are_ignored_as_in_spin() {
        let r = router();
        let m = |p: &str| r.route(p).map(|m| (m.component, m.path_info));
        assert_eq!(m("/exact/"), Some(("exact".into(), String::new())));
        assert_eq!(m("//exact//"), Some(("exact".into(), String::new())));
        assert_eq!(m("/api/devices/"), Some(("devices".into(), "/".into())));
        assert_eq!(m("/api/devices/7/"), Some(("devices".into(), "/7/".into())));
        assert_eq!(m("/api/devices//7"), Some(("devices".into(), "//7".into())));
        assert_eq!(
            m("//api/devices/7//"),
            Some(("devices".into(), "/7/".into()))
        );
        assert_eq!(m("/"), Some(("root".into(), "/".into())));
        assert_eq!(m("/x/y/"), Some(("root".into(), "/x/y/".into())));
        // A route's own trailing slash is dropped: `/only/` is `/only`.
        let r = Router::new([("/only/", "a"), ("/p/.../", "b"), ("/s/*", "c")]).unwrap();
        assert_eq!(r.route("/only").unwrap().component, "a");
        assert_eq!(r.route("/p/q").unwrap().path_info, "/q");
        assert_eq!(r.route("/s").unwrap().path_info, "");
        assert_eq!(r.route("/s/t/u").unwrap().path_info, "/t/u");
    }

    #[test]
    fn spin_route_headers_are_as_spin_sets_them() {
        let r = Router::new([
            ("/", "root"),
            ("/exact/", "exact"),
            ("/w/...", "w"),
            ("/s/*", "s"),
            ("/t/.../", "t"),
        ])
        .unwrap();
        let h = |p: &str| {
            let m = r.route(p).unwrap();
            (
                m.raw_route().to_string(),
                m.matched_route().to_string(),
                m.component_route().to_string(),
            )
        };
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(h("/"), s("/", "", "/"));
        assert_eq!(h("/exact"), s("/exact/", "/exact", "/exact/"));
        assert_eq!(h("/w/x"), s("/w/...", "/w/...", "/w"));
        assert_eq!(h("/s/x"), s("/s/*", "/s/*", "/s/*"));
        assert_eq!(h("/t/x"), s("/t/.../", "/t/...", "/t/.../"));
        let m = r.route("/w/x").unwrap();
        let addr = "127.0.0.1:1".parse().unwrap();
        let headers: Vec<_> = spin_headers(&m, "http://h/w/x", addr).collect();
        let get = |n: &HeaderName| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get(&spin_header::MATCHED_ROUTE).unwrap(), "/w/...");
        assert_eq!(get(&spin_header::COMPONENT_ROUTE).unwrap(), "/w");
        assert_eq!(get(&spin_header::PATH_INFO).unwrap(), "/x");
    }
}

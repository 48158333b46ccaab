//! HTTP routing as Spin 4 does it, with the matcher Spin itself uses (the
//! `routefinder` crate, the version Spin 4.0.2 locks) and Spin's reading of a route:
//!
//! - exact routes (`/exact`), single-segment parameters (`/devices/:id/state`, also
//!   ended by a `.`: `/files/:name.:ext`), and trailing wildcards `/prefix/...` (also
//!   written `/prefix/*`) which also match `/prefix` itself;
//! - the most specific route wins, segment by segment from the left: an exact segment
//!   over a parameter over a wildcard (`/devices/:id/state` beats `/devices/...` for
//!   `/devices/7/state`; `/devices/special` beats both);
//! - leading and trailing slashes of the request path are ignored when matching
//!   (`/exact/` is `/exact`), and one trailing slash of a route is dropped.
//!
//! This host refuses, at start, routes Spin would accept but that are almost surely
//! mistakes (a `...` or `*` that does not end the route, an empty segment, a route
//! under Spin's reserved `/.well-known/spin/`) and duplicate routes (Spin keeps the
//! last one): docs/spin-differences.md.
//!
//! Also builds the `spin-*` request headers components rely on (spin-sdk's Router
//! reads `spin-path-info`), with one `spin-path-match-<name>` header per parameter.

use anyhow::{Context, bail};
use http::{HeaderName, HeaderValue};

#[derive(Debug)]
pub struct Router {
    /// Spin's matcher; each handler is an index into `routes`.
    finder: routefinder::Router<usize>,
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    raw: String,
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

/// What a request matched, and the values of the `spin-*` headers derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub component: String,
    /// The rest of the path after the component route: `spin-path-info`.
    pub path_info: String,
    /// The values of the route's `:name` parameters, in route order:
    /// `spin-path-match-<name>`.
    pub params: Vec<(String, String)>,
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
        let mut finder = routefinder::Router::new();
        let mut specs: Vec<String> = Vec::new();
        for (raw, component) in routes {
            let context = || format!("[[trigger.http]] route {raw:?} (component {component:?})");
            let spec = spec(raw).with_context(context)?;
            let normal = spec.to_string();
            if let Some(dup) = specs.iter().position(|s| *s == normal) {
                bail!(
                    "route {raw:?} (component {component:?}) duplicates route {:?} (component {:?})",
                    out[dup].raw,
                    out[dup].component
                );
            }
            let header = |value: &str| {
                HeaderValue::from_str(value)
                    .with_context(|| format!("route {raw:?} cannot be sent in a spin-* header"))
            };
            let matched = raw.strip_suffix('/').unwrap_or(raw);
            let component_route = raw.strip_suffix("/...").unwrap_or(raw);
            finder
                .add(spec, out.len())
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(context)?;
            specs.push(normal);
            out.push(Route {
                headers: RouteHeaders {
                    raw: header(raw)?,
                    matched: header(matched)?,
                    component: header(component_route)?,
                },
                raw: raw.to_string(),
                component: component.to_string(),
            });
        }
        Ok(Router {
            finder,
            routes: out,
        })
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let best = self.finder.best_match(path)?;
        let route = &self.routes[*best.handler()];
        let captures = best.captures();
        // Spin puts back the slashes the matcher dropped around the wildcard's
        // capture: one before a non-empty capture, and one after if the path ended
        // with one (spin-routes' `trailing_wildcard`).
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(captured) => match (captured.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{captured}"),
                (false, true) => format!("/{captured}/"),
            },
        };
        let params = captures
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Some(RouteMatch {
            component: route.component.clone(),
            path_info,
            params,
            headers: route.headers.clone(),
        })
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.component.as_str())
    }
}

/// Routes under this prefix are answered by Spin itself and never reach a component.
const SPIN_WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// The matcher's reading of `raw`, as Spin builds it: one trailing `/` dropped, then a
/// trailing `/...` read as the wildcard `/*`; refused if it is one this host does not
/// take (see the module comment).
fn spec(raw: &str) -> anyhow::Result<routefinder::RouteSpec> {
    if !raw.starts_with('/') {
        bail!("a route must start with '/'");
    }
    let route = raw.strip_suffix('/').unwrap_or(raw);
    if route.starts_with(SPIN_WELL_KNOWN_PREFIX) {
        bail!("routes under {SPIN_WELL_KNOWN_PREFIX} are reserved: Spin answers them itself");
    }
    let (body, spec) = match route.strip_suffix("/...") {
        Some(prefix) => (prefix, format!("{prefix}/*")),
        None => (route.strip_suffix("/*").unwrap_or(route), route.to_string()),
    };
    let body = body.trim_start_matches('/').trim_end_matches('/');
    if body.contains("...") {
        bail!("`...` may only end a route, as `/...`");
    }
    for segment in body.split(['/', '.']) {
        if segment.starts_with('*') {
            bail!("a wildcard may only end a route, as `/...`");
        }
        if segment == ":" {
            bail!("a route parameter needs a name: `:name`");
        }
    }
    if body.split('/').any(str::is_empty) && !body.is_empty() {
        bail!("a route must not contain an empty segment (`//`)");
    }
    spec.parse().map_err(|e: String| anyhow::anyhow!("{e}"))
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
pub fn spin_headers<'m>(
    m: &'m RouteMatch,
    full_url: &str,
    client_addr: std::net::SocketAddr,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'm {
    let full_url = HeaderValue::from_str(full_url).ok();
    let path_info = HeaderValue::from_str(&m.path_info).ok();
    let client_addr = HeaderValue::from_str(&client_addr.to_string()).ok();
    let fixed = [
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
    ];
    // Spin names them SPIN_PATH_MATCH_<NAME> and sends them lowercased with `-`.
    let params = m.params.iter().map(|(name, value)| {
        let name = format!("spin-path-match-{}", name.replace('_', "-")).to_ascii_lowercase();
        (
            HeaderName::from_bytes(name.as_bytes()).ok(),
            HeaderValue::from_str(value).ok(),
        )
    });
    fixed
        .into_iter()
        .map(|(name, value)| (Some(name), value))
        .chain(params)
        .filter_map(|(name, value)| Some((name?, value?)))
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
            "/a/:",
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
    fn parameters_rank_between_exact_segments_and_wildcards() {
        let r = Router::new([
            ("/v1/devices/...", "registry"),
            ("/v1/devices/:id/state", "state"),
            ("/v1/devices/:id/commands/...", "commands"),
            ("/v1/devices/fleet", "fleet"),
            ("/v1/:any/x", "any"),
            ("/files/:name.:ext", "files"),
        ])
        .unwrap();
        let c = |p: &str| r.route(p).map(|m| m.component);
        // exact, then a parameter, then the wildcard, segment by segment from the left
        assert_eq!(c("/v1/devices/fleet").as_deref(), Some("fleet"));
        assert_eq!(c("/v1/devices/d7/state").as_deref(), Some("state"));
        assert_eq!(c("/v1/devices/d7/state/").as_deref(), Some("state"));
        assert_eq!(c("/v1/devices/d7/commands").as_deref(), Some("commands"));
        assert_eq!(
            c("/v1/devices/d7/commands/c1/cancel").as_deref(),
            Some("commands")
        );
        assert_eq!(c("/v1/devices/d7").as_deref(), Some("registry"));
        assert_eq!(c("/v1/devices/d7/key").as_deref(), Some("registry"));
        assert_eq!(c("/v1/devices/d7/state/more").as_deref(), Some("registry"));
        assert_eq!(c("/v1/devices").as_deref(), Some("registry"));
        // `devices` is exact where `:any` is a parameter: the exact segment wins even
        // though the wildcard route is shorter.
        assert_eq!(c("/v1/devices/x").as_deref(), Some("registry"));
        assert_eq!(c("/v1/things/x").as_deref(), Some("any"));
        assert_eq!(c("/v1/things/y"), None);
        assert_eq!(c("/files/a.txt").as_deref(), Some("files"));
        assert_eq!(c("/files/a"), None);

        let m = r.route("/v1/devices/d7/commands/c1").unwrap();
        assert_eq!(m.params, [("id".to_string(), "d7".to_string())]);
        assert_eq!(m.path_info, "/c1");
        assert_eq!(m.component_route(), "/v1/devices/:id/commands");
        let m = r.route("/files/a.txt").unwrap();
        let params: Vec<_> = m
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(params, [("name", "a"), ("ext", "txt")]);
        assert!(r.route("/v1/devices/d7").unwrap().params.is_empty());
    }

    #[test]
    fn each_parameter_is_a_spin_path_match_header() {
        let r = Router::new([("/v1/devices/:device_id/state", "state")]).unwrap();
        let m = r.route("/v1/devices/sn-1/state").unwrap();
        let addr = "127.0.0.1:1".parse().unwrap();
        let headers: Vec<_> = spin_headers(&m, "http://h/v1/devices/sn-1/state", addr).collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("spin-path-match-device-id").unwrap(), "sn-1");
        assert_eq!(
            get("spin-matched-route").unwrap(),
            "/v1/devices/:device_id/state"
        );
        assert_eq!(
            get("spin-component-route").unwrap(),
            "/v1/devices/:device_id/state"
        );
        assert_eq!(get("spin-path-info").unwrap(), "");
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

//! HTTP routing as Spin does it for manifest v2: exact routes and `/prefix/...`
//! wildcards (which also match `/prefix` itself); the most specific route wins —
//! an exact route over any wildcard, a longer wildcard prefix over a shorter one.
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
    /// `spin-matched-route` and `spin-raw-component-route`, made once.
    raw_header: HeaderValue,
    /// `spin-component-route`, made once.
    component_route_header: HeaderValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// The prefix without the trailing `/...`; empty for the catch-all `/...`.
    Wildcard(String),
}

/// What a request matched, and the values of the `spin-*` headers derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub component: String,
    /// The rest of the path after the component route: `spin-path-info`.
    pub path_info: String,
    raw_header: HeaderValue,
    component_route_header: HeaderValue,
}

impl RouteMatch {
    /// The route as written in the manifest: `spin-matched-route`,
    /// `spin-raw-component-route`.
    pub fn raw_route(&self) -> &str {
        // Made from a `&str` by `Router::new`, so always valid UTF-8.
        self.raw_header.to_str().unwrap_or_default()
    }

    /// The route without its wildcard: `spin-component-route`.
    pub fn component_route(&self) -> &str {
        self.component_route_header.to_str().unwrap_or_default()
    }
}

impl Router {
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> anyhow::Result<Router> {
        let mut out: Vec<Route> = Vec::new();
        for (raw, component) in routes {
            let pattern = parse(raw)?;
            if let Some(dup) = out.iter().find(|r| r.pattern == pattern) {
                bail!(
                    "route {raw:?} (component {component:?}) duplicates route {:?} (component {:?})",
                    dup.raw,
                    dup.component
                );
            }
            let component_route = match &pattern {
                Pattern::Exact(p) | Pattern::Wildcard(p) => p.as_str(),
            };
            let header = |value: &str| {
                HeaderValue::from_str(value)
                    .with_context(|| format!("route {raw:?} cannot be sent in a spin-* header"))
            };
            out.push(Route {
                raw_header: header(raw)?,
                component_route_header: header(component_route)?,
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
        self.routes.iter().find_map(|r| {
            let path_info = match &r.pattern {
                Pattern::Exact(p) if p == path => String::new(),
                Pattern::Exact(_) => return None,
                Pattern::Wildcard(prefix) => {
                    let rest = path.strip_prefix(prefix.as_str())?;
                    if !(rest.is_empty() || rest.starts_with('/')) {
                        return None;
                    }
                    rest.to_string()
                }
            };
            Some(RouteMatch {
                component: r.component.clone(),
                path_info,
                raw_header: r.raw_header.clone(),
                component_route_header: r.component_route_header.clone(),
            })
        })
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.component.as_str())
    }
}

fn parse(raw: &str) -> anyhow::Result<Pattern> {
    if !raw.starts_with('/') {
        bail!("route {raw:?} must start with '/'");
    }
    let (body, wildcard) = match raw.strip_suffix("/...") {
        Some(prefix) => (prefix, true),
        None => (raw, false),
    };
    if body.contains("...") || body.split('/').any(|s| s.starts_with(':')) {
        bail!(
            "route {raw:?}: only exact routes and a trailing `/...` wildcard are supported by the toaster host"
        );
    }
    let body = body.trim_end_matches('/');
    Ok(if wildcard {
        Pattern::Wildcard(body.to_string())
    } else if body.is_empty() {
        Pattern::Exact("/".to_string())
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
        (spin_header::MATCHED_ROUTE, Some(m.raw_header.clone())),
        (spin_header::BASE_PATH, Some(HeaderValue::from_static("/"))),
        (spin_header::RAW_COMPONENT_ROUTE, Some(m.raw_header.clone())),
        (
            spin_header::COMPONENT_ROUTE,
            Some(m.component_route_header.clone()),
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
        assert!(Router::new([("/a/:id", "x")]).is_err());
        assert!(Router::new([("a", "x")]).is_err());
    }
}

//! What the console answers for a path and a request's headers: pure, so that every
//! rule (caching, compression, revalidation, the SPA fallback) is unit-tested
//! natively.

/// One embedded file of web/dist (build.rs writes the table).
pub struct Asset {
    /// Relative to web/dist: `index.html`, `assets/index-<hash>.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A strong validator: the quoted start of the file's SHA-256.
    pub etag: &'static str,
    pub body: &'static [u8],
    /// The gzip copy, when it is smaller.
    pub gzip: Option<&'static [u8]>,
}

/// The page's Content-Security-Policy: scripts, styles, fonts and images from this
/// origin only (no inline script or style), requests to this origin only, no frames,
/// no plugins, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// Hashed asset names never change content: cached for a year.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `index.html` is revalidated on every load (a 304 when unchanged), so a new release
/// is picked up at once.
pub const REVALIDATE: &str = "no-cache";

/// What to answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// 200, or 304 when `not_modified`; `gzip` when the gzip copy goes out.
    File {
        asset: &'a Asset,
        gzip: bool,
        not_modified: bool,
        cache_control: &'static str,
    },
    /// 302 to this location.
    Redirect(&'static str),
    /// 404: a file under assets/ that does not exist (an old page asking for an asset
    /// of a release that is gone), or a path the console does not serve.
    NotFound,
    /// 503: the component was built without web/dist.
    NotBuilt,
}

impl std::fmt::Debug for Asset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path)
    }
}

impl PartialEq for Asset {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Asset {}

/// The answer for a GET or HEAD of `path` (without its query).
pub fn answer<'a>(
    assets: &'a [Asset],
    path: &str,
    accept_encoding: Option<&str>,
    if_none_match: Option<&str>,
) -> Answer<'a> {
    let rest = match path {
        "/" | "" | "/console" => return Answer::Redirect("/console/"),
        _ => match path.strip_prefix("/console/") {
            Some(rest) => rest,
            None => return Answer::NotFound,
        },
    };
    let Some(index) = assets.iter().find(|a| a.path == "index.html") else {
        return Answer::NotBuilt;
    };
    let (asset, cache_control) = if rest.starts_with("assets/") {
        match assets.iter().find(|a| a.path == rest) {
            Some(asset) => (asset, IMMUTABLE),
            None => return Answer::NotFound,
        }
    } else if let Some(asset) = assets
        .iter()
        .find(|a| a.path == rest && a.path != "index.html")
    {
        // Other files at the top of web/dist (none today).
        (asset, REVALIDATE)
    } else {
        // Every other path is a page of the console (`/console/devices/d1`): the
        // application, which routes on the path itself.
        (index, REVALIDATE)
    };
    Answer::File {
        asset,
        gzip: asset.gzip.is_some() && accepts_gzip(accept_encoding),
        not_modified: if_none_match.is_some_and(|v| etag_matches(v, asset.etag)),
        cache_control,
    }
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): named, or `*`, without
/// `q=0`. An explicit `gzip;q=0` wins over `*`.
pub fn accepts_gzip(header: Option<&str>) -> bool {
    let Some(header) = header else { return false };
    let mut star = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return !refused;
        }
        if coding == "*" {
            star = !refused;
        }
    }
    star
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2), or is `*`.
pub fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: Asset = Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        etag: "\"aaaa\"",
        body: b"<!doctype html>",
        gzip: None,
    };
    const SCRIPT: Asset = Asset {
        path: "assets/index-1234.js",
        content_type: "text/javascript; charset=utf-8",
        etag: "\"bbbb\"",
        body: b"console.log(1)",
        gzip: Some(b"gz"),
    };
    const ASSETS: &[Asset] = &[INDEX, SCRIPT];

    fn file(answer: Answer<'_>) -> (&str, bool, bool, &'static str) {
        match answer {
            Answer::File {
                asset,
                gzip,
                not_modified,
                cache_control,
            } => (asset.path, gzip, not_modified, cache_control),
            other => panic!("not a file: {other:?}"),
        }
    }

    #[test]
    fn the_root_and_the_bare_prefix_redirect_to_the_console() {
        for path in ["/", "/console"] {
            assert_eq!(
                answer(ASSETS, path, None, None),
                Answer::Redirect("/console/")
            );
        }
    }

    #[test]
    fn hashed_assets_are_immutable_and_pages_revalidate() {
        assert_eq!(
            file(answer(ASSETS, "/console/assets/index-1234.js", None, None)),
            ("assets/index-1234.js", false, false, IMMUTABLE)
        );
        for page in [
            "/console/",
            "/console/devices/d%3Cscript%3E",
            "/console/audit",
        ] {
            assert_eq!(
                file(answer(ASSETS, page, None, None)),
                ("index.html", false, false, REVALIDATE),
                "{page}"
            );
        }
    }

    #[test]
    fn a_missing_asset_is_404_not_the_page() {
        assert_eq!(
            answer(ASSETS, "/console/assets/index-old.js", None, None),
            Answer::NotFound
        );
        assert_eq!(answer(ASSETS, "/elsewhere", None, None), Answer::NotFound);
    }

    #[test]
    fn without_built_assets_the_console_says_so() {
        assert_eq!(answer(&[], "/console/", None, None), Answer::NotBuilt);
        assert_eq!(answer(&[], "/", None, None), Answer::Redirect("/console/"));
    }

    #[test]
    fn gzip_goes_out_only_when_accepted_and_smaller() {
        let js = "/console/assets/index-1234.js";
        assert!(file(answer(ASSETS, js, Some("gzip, deflate, br"), None)).1);
        assert!(!file(answer(ASSETS, js, Some("br"), None)).1);
        // index.html has no gzip copy (not smaller), whatever the client accepts.
        assert!(!file(answer(ASSETS, "/console/", Some("gzip"), None)).1);
    }

    #[test]
    fn accept_encoding_follows_rfc_9110() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("GZIP;q=0.5")));
        assert!(accepts_gzip(Some("br, *")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("*, gzip;q=0")));
        assert!(!accepts_gzip(Some("*;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn if_none_match_revalidates() {
        let page = "/console/devices";
        assert!(file(answer(ASSETS, page, None, Some("\"aaaa\""))).2);
        assert!(file(answer(ASSETS, page, None, Some("W/\"aaaa\""))).2);
        assert!(file(answer(ASSETS, page, None, Some("\"x\", \"aaaa\""))).2);
        assert!(file(answer(ASSETS, page, None, Some("*"))).2);
        assert!(!file(answer(ASSETS, page, None, Some("\"bbbb\""))).2);
        assert!(!file(answer(ASSETS, page, None, Some("aaaa"))).2);
    }
}

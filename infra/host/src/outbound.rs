//! `allowed_outbound_hosts`: which network destinations a component may reach.
//! Checked in the host for outgoing HTTP and PostgreSQL alike; the component only
//! ever sees a refusal, never the network.
//!
//! Entries look like Spin's: `scheme://host[:port]`, where scheme, host and port may be
//! `*`, host may be `*.example.com`, port may be a range `8000-8999`, and an omitted
//! port means the scheme's default.

use anyhow::{Context, bail};

#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: any subdomain, stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
enum PortPattern {
    Any,
    Range(u16, u16),
}

pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" | "postgresql" => Some(5432),
        "redis" => Some(6379),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHosts {
    /// Parses already-rendered entries (variables substituted).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<AllowedHosts> {
        let entries = entries
            .iter()
            .map(|e| {
                parse_entry(e.as_ref())
                    .with_context(|| format!("allowed_outbound_hosts entry {:?}", e.as_ref()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(AllowedHosts { entries })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let Some(port) = port.or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.entries.iter().any(|e| {
            let scheme_ok = match &e.scheme {
                None => true,
                Some(s) => *s == scheme || (s == "postgres" && scheme == "postgresql"),
            };
            let host_ok = match &e.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => *h == host,
                HostPattern::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
            };
            let port_ok = match e.port {
                PortPattern::Any => true,
                PortPattern::Range(lo, hi) => (lo..=hi).contains(&port),
            };
            scheme_ok && host_ok && port_ok
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_entry(entry: &str) -> anyhow::Result<Entry> {
    let Some((scheme, rest)) = entry.split_once("://") else {
        bail!("must look like scheme://host[:port]");
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        bail!("must not contain a path or credentials");
    }
    let scheme = match scheme {
        "*" => None,
        s if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-') =>
        {
            Some(s.to_ascii_lowercase())
        }
        _ => bail!("invalid scheme"),
    };
    let (host, port) = split_host_port(rest)?;
    let host = match host.as_str() {
        "*" => HostPattern::Any,
        h if h.starts_with("*.") => HostPattern::Suffix(h[1..].to_string()),
        h if h.contains('*') => bail!("`*` may only be the whole host or a leading `*.`"),
        "" => bail!("missing host"),
        h => HostPattern::Exact(h.to_string()),
    };
    let port = match port.as_deref() {
        Some("*") => PortPattern::Any,
        Some(p) => match p.split_once('-') {
            Some((lo, hi)) => PortPattern::Range(lo.parse()?, hi.parse()?),
            None => {
                let p: u16 = p.parse().context("invalid port")?;
                PortPattern::Range(p, p)
            }
        },
        None => match scheme.as_deref().and_then(default_port) {
            Some(p) => PortPattern::Range(p, p),
            None => bail!("a port is required for this scheme"),
        },
    };
    Ok(Entry { scheme, host, port })
}

fn split_host_port(s: &str) -> anyhow::Result<(String, Option<String>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed IPv6 bracket")?;
        let port = after.strip_prefix(':').map(str::to_string);
        return Ok((host.to_ascii_lowercase(), port));
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h.to_ascii_lowercase(), Some(p.to_string())),
        None => (s.to_ascii_lowercase(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_entries_match_only_themselves() {
        let a =
            AllowedHosts::parse(&["postgres://127.0.0.1:5432", "https://api.example.com"]).unwrap();
        assert!(a.allows("postgres", "127.0.0.1", Some(5432)));
        assert!(a.allows("postgres", "127.0.0.1", None));
        assert!(!a.allows("postgres", "127.0.0.1", Some(5433)));
        assert!(!a.allows("postgres", "10.0.0.1", Some(5432)));
        assert!(a.allows("https", "API.example.com", None));
        assert!(!a.allows("http", "api.example.com", None));
        assert!(!a.allows("https", "evil.com", None));
    }

    #[test]
    fn wildcards() {
        let a =
            AllowedHosts::parse(&["*://*.example.com:*", "http://localhost:8000-8010"]).unwrap();
        assert!(a.allows("https", "a.example.com", Some(1)));
        assert!(!a.allows("https", "example.com", None));
        assert!(!a.allows("https", "a.example.com.evil", None));
        assert!(a.allows("http", "localhost", Some(8005)));
        assert!(!a.allows("http", "localhost", Some(8011)));
    }

    #[test]
    fn empty_allows_nothing_and_bad_entries_are_refused() {
        assert!(!AllowedHosts::default().allows("http", "localhost", None));
        for bad in [
            "localhost",
            "http://a/b",
            "http://a:b",
            "foo://h",
            "http://a*b",
            "http://u:p@h",
        ] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad}");
        }
    }
}

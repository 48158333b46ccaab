//! `allowed_outbound_hosts`: which network destinations a component may reach.
//! Checked in the host for outgoing HTTP and PostgreSQL alike; the component only
//! ever sees a refusal, never the network.
//!
//! Entries are read as Spin 4 reads them (docs/spin-differences.draft.md):
//! `scheme://host[:port]`, surrounding whitespace ignored, where
//! - scheme is `*` or letters only, compared as written (Spin never lowercases it);
//! - host is `*`, `*.example.com` (any subdomain, not the domain itself), an IP
//!   network in CIDR form (`10.0.0.0/8`), `self`, or a host name or IP address that
//!   must be valid in a URL (names are compared case-insensitively);
//! - port is `*`, a number, or a half-open range `8000..8100` (8100 excluded); an
//!   omitted port is the scheme's default (only http, https, postgres, mysql, redis
//!   and mqtt have one; an entry without a port for any other scheme is an error).
//!
//! An IPv6 address needs brackets and an explicit port (`http://[::1]:8080`), as in
//! Spin. `self` (relative requests to the app itself) is accepted but, as this host
//! does not route requests to itself, it allows nothing. Service chaining
//! (`*.spin.internal`) is refused: this host does not implement it.

use std::net::IpAddr;

use anyhow::{Context, bail};
use url::Host;

#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone)]
enum SchemePattern {
    Any,
    /// As written: `HTTP://...` never matches, since request schemes are lowercase.
    Exact(String),
}

#[derive(Debug, Clone)]
enum HostPattern {
    Any,
    /// `self` / `self.alt`: relative requests to the app itself, which this host
    /// does not make, so it matches no destination.
    ToSelf,
    /// `*.example.com`: any domain ending in `.example.com`, stored as written.
    Subdomain(String),
    Literal(Host<String>),
    Network {
        addr: IpAddr,
        prefix: u8,
    },
}

#[derive(Debug, Clone)]
enum PortPattern {
    Any,
    Exact(u16),
    /// `start..end`, end excluded.
    Range(u16, u16),
}

/// The port an entry or a request without one means, for the schemes Spin knows.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "redis" => Some(6379),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

/// Spin reaches components by service chaining at `<component>.spin.internal`.
const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

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

    /// Whether a request to `scheme://host[:port]` is allowed. `host` is as it appears
    /// in a URL: an IPv6 address in brackets. A host that is not valid in a URL (an
    /// IPv6 address without brackets, as a PostgreSQL address gives it) is refused,
    /// as Spin refuses it.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let Ok(host) = Host::parse(host) else {
            return false;
        };
        self.entries.iter().any(|e| {
            e.scheme.allows(&scheme) && e.host.allows(&host) && e.port.allows(port, &scheme)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl SchemePattern {
    fn allows(&self, scheme: &str) -> bool {
        match self {
            SchemePattern::Any => true,
            SchemePattern::Exact(s) => s == scheme,
        }
    }
}

impl HostPattern {
    fn allows(&self, host: &Host<String>) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::ToSelf, _) => false,
            (HostPattern::Subdomain(suffix), Host::Domain(d)) => d.ends_with(suffix.as_str()),
            (HostPattern::Subdomain(_), _) => false,
            (HostPattern::Literal(l), h) => l == h,
            (HostPattern::Network { addr, prefix }, Host::Ipv4(ip)) => {
                in_network(*addr, *prefix, IpAddr::V4(*ip))
            }
            (HostPattern::Network { addr, prefix }, Host::Ipv6(ip)) => {
                in_network(*addr, *prefix, IpAddr::V6(*ip))
            }
            (HostPattern::Network { .. }, Host::Domain(_)) => false,
        }
    }
}

impl PortPattern {
    fn allows(&self, port: Option<u16>, scheme: &str) -> bool {
        if let PortPattern::Any = self {
            return true;
        }
        let Some(port) = port.or_else(|| default_port(scheme)) else {
            return false;
        };
        match self {
            PortPattern::Any => true,
            PortPattern::Exact(p) => *p == port,
            PortPattern::Range(lo, hi) => (*lo..*hi).contains(&port),
        }
    }
}

/// Checks one already-rendered entry, without naming it in the error.
pub fn check_entry(entry: &str) -> anyhow::Result<()> {
    parse_entry(entry).map(drop)
}

fn parse_entry(entry: &str) -> anyhow::Result<Entry> {
    let entry = entry.trim();
    let Some((scheme, rest)) = entry.split_once("://") else {
        if entry == "insecure:allow-all" {
            bail!("`insecure:allow-all` is not accepted: use \"*://*:*\" to allow everything");
        }
        bail!(
            "must look like <scheme>://<host>[:<port>], where each part may be `*` (\"*://*:*\" allows everything)"
        );
    };
    // The port is whatever follows the last `:` (so `[::1]` needs one); it may end
    // with a single `/`, but nothing may follow that.
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
    let port = match port.split_once('/') {
        Some((port, "")) => port,
        Some(_) => bail!("must not have a path"),
        None => port,
    };
    let port = parse_port(port, scheme)?;
    let scheme = parse_scheme(scheme)?;
    let host = parse_host(host)?;
    Ok(Entry { scheme, host, port })
}

fn parse_scheme(scheme: &str) -> anyhow::Result<SchemePattern> {
    if scheme == "*" {
        return Ok(SchemePattern::Any);
    }
    if scheme.starts_with('{') {
        bail!("scheme lists are not supported");
    }
    if scheme.chars().any(|c| !c.is_alphabetic()) {
        bail!("invalid scheme {scheme:?}: only letters are allowed");
    }
    Ok(SchemePattern::Exact(scheme.to_string()))
}

fn parse_port(port: &str, scheme: &str) -> anyhow::Result<PortPattern> {
    if port.is_empty() {
        return match default_port(scheme) {
            Some(p) => Ok(PortPattern::Exact(p)),
            None => bail!("no port is given and scheme {scheme:?} has no default port"),
        };
    }
    if port == "*" {
        return Ok(PortPattern::Any);
    }
    if port.starts_with('{') {
        bail!("port lists are not supported");
    }
    if let Some((lo, hi)) = port.split_once("..") {
        let number = |s: &str| {
            s.parse::<u16>()
                .with_context(|| format!("port range {port:?} contains a non-number"))
        };
        return Ok(PortPattern::Range(number(lo)?, number(hi)?));
    }
    match port.parse::<u16>() {
        Ok(p) => Ok(PortPattern::Exact(p)),
        Err(_) if port.contains('-') => {
            bail!("invalid port {port:?}: a port range is written `start..end`, end excluded")
        }
        Err(_) => bail!("invalid port {port:?}"),
    }
}

fn parse_host(host: &str) -> anyhow::Result<HostPattern> {
    let host = host.trim();
    let pattern = match host {
        "*" => HostPattern::Any,
        "self" | "self.alt" => HostPattern::ToSelf,
        h if h.starts_with('{') => bail!("host lists are not supported"),
        h => match parse_network(h) {
            Some((addr, prefix)) => HostPattern::Network { addr, prefix },
            None => {
                let h = h.trim_end_matches('/');
                if h.contains('/') {
                    bail!("must not have a path");
                }
                if let Some(domain) = h.strip_prefix("*.") {
                    if domain.contains('*') {
                        bail!("`*` may only be the whole host or a leading `*.`");
                    }
                    HostPattern::Subdomain(format!(".{domain}"))
                } else if h.contains('*') {
                    bail!("`*` may only be the whole host or a leading `*.`");
                } else {
                    HostPattern::Literal(
                        Host::parse(h).with_context(|| format!("invalid host {h:?}"))?,
                    )
                }
            }
        },
    };
    let chaining = match &pattern {
        HostPattern::Literal(Host::Domain(d)) => d.ends_with(SERVICE_CHAINING_SUFFIX),
        HostPattern::Subdomain(s) => s == SERVICE_CHAINING_SUFFIX,
        _ => false,
    };
    if chaining {
        bail!("service chaining (`*.spin.internal`) is not supported by the toaster host");
    }
    Ok(pattern)
}

/// `address/prefix`, an IP network; host bits of the address are ignored.
fn parse_network(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= bits).then_some((addr, prefix))
}

fn in_network(network: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
        let keep = u32::from(prefix).min(width);
        if keep == 0 { 0 } else { bits >> (width - keep) }
    }
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            masked(u32::from(n).into(), 32, prefix) == masked(u32::from(i).into(), 32, prefix)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            masked(u128::from(n), 128, prefix) == masked(u128::from(i), 128, prefix)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).unwrap()
    }

    #[test]
    fn exact_entries_match_only_themselves() {
        let a = parse(&["postgres://127.0.0.1:5432", "https://api.example.com"]);
        assert!(a.allows("postgres", "127.0.0.1", Some(5432)));
        assert!(a.allows("postgres", "127.0.0.1", None));
        assert!(!a.allows("postgres", "127.0.0.1", Some(5433)));
        assert!(!a.allows("postgres", "10.0.0.1", Some(5432)));
        assert!(a.allows("https", "API.example.com", None));
        assert!(a.allows("HTTPS", "api.example.com", Some(443)));
        assert!(!a.allows("http", "api.example.com", None));
        assert!(!a.allows("https", "evil.com", None));
        assert!(!a.allows("postgresql", "127.0.0.1", Some(5432)));
    }

    #[test]
    fn wildcards() {
        let a = parse(&["*://*.example.com:*", "http://localhost:8000..8011"]);
        assert!(a.allows("https", "a.example.com", Some(1)));
        assert!(
            a.allows("gopher", "a.b.example.com", None),
            "`:*` needs no port"
        );
        assert!(!a.allows("https", "example.com", None));
        assert!(!a.allows("https", "a.example.com.evil", None));
        assert!(a.allows("http", "localhost", Some(8000)));
        assert!(a.allows("http", "localhost", Some(8010)));
        assert!(
            !a.allows("http", "localhost", Some(8011)),
            "the end is excluded"
        );
        assert!(!a.allows("http", "localhost", Some(7999)));
        assert!(!a.allows("http", "localhost", None));
        let any = parse(&["*://*:*"]);
        assert!(any.allows("postgres", "db", Some(1)));
        assert!(
            !any.allows("postgres", "::1", Some(1)),
            "an invalid URL host"
        );
    }

    #[test]
    fn entries_are_read_as_spin_reads_them() {
        let a = parse(&[" http://a.example.com/ ", "redis://cache:", "mysql://m"]);
        assert!(a.allows("http", "a.example.com", Some(80)));
        assert!(
            a.allows("redis", "cache", Some(6379)),
            "an empty port is the default"
        );
        assert!(a.allows("mysql", "m", Some(3306)));
        let a = parse(&["http://[::1]:8080", "postgres://10.0.0.0/8:5432"]);
        assert!(a.allows("http", "[::1]", Some(8080)));
        assert!(!a.allows("http", "[::2]", Some(8080)));
        assert!(a.allows("postgres", "10.1.2.3", None));
        assert!(!a.allows("postgres", "11.0.0.1", None));
        assert!(!a.allows("postgres", "ten.example", None));
        let a = parse(&["*://192.168.1.77/24:80", "*://ff00::/8:80"]);
        assert!(
            a.allows("http", "192.168.1.1", None),
            "host bits are ignored"
        );
        assert!(a.allows("http", "[ff12::1]", None));
        assert!(!a.allows("http", "[fe00::1]", None));
        // Spin keeps the scheme and a `*.` suffix as written: they never match.
        let a = parse(&["HTTP://h:80", "http://*.Example.com"]);
        assert!(!a.allows("http", "h", None));
        assert!(!a.allows("http", "a.example.com", None));
        // `self` is accepted, and allows nothing here.
        let a = parse(&["http://self", "http://self.alt"]);
        assert!(!a.allows("http", "self", None));
        assert!(!a.allows("http", "self.alt", None));
    }

    #[test]
    fn empty_allows_nothing_and_bad_entries_are_refused() {
        assert!(!AllowedHosts::default().allows("http", "localhost", None));
        for bad in [
            "localhost",
            "localhost:80",
            "insecure:allow-all",
            "http://a/b",
            "http://a:80/b",
            "http://a:b",
            "foo://h",
            "postgresql://h",
            "HTTP://h",
            "http://a*b",
            "http://*.*.example.com",
            "http://u:p@h",
            "http://u@h:80",
            "http://h?x:80",
            "http://exa mple.com",
            "http://:80",
            "ht-tp://h:1",
            "tcp4://h:1",
            "{http,https}://h",
            "http://{a,b}",
            "http://h:{80,81}",
            "http://h:8000-8010",
            "http://h:1..x",
            "http://h:65536",
            "http://[::1]",
            "*://10.0.0.0/8",
            "http://x.spin.internal",
            "http://*.spin.internal",
        ] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad}");
        }
        let err = AllowedHosts::parse(&["http://h:8000-8010"]).unwrap_err();
        assert!(format!("{err:#}").contains("8000-8010"), "{err:#}");
        assert!(format!("{err:#}").contains(".."), "{err:#}");
    }
}

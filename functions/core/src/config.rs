//! The deployment's variables (spin.toml `[variables]`): one parser per kind of value,
//! each returning the typed value or a message saying what the variable accepts.
//!
//! Both sides use them. `toaster up` checks every variable of the app before it builds
//! or starts anything, and refuses to start with a message from here. The components
//! parse the values they read with the same functions; on Spin, which has no start
//! hook, that is the first time anyone looks at a value, and a bad one is answered
//! with a 500 naming the variable (`toaster_platform::config`), never replaced by a
//! default.
//!
//! Messages never contain a value: callers add it, for variables that are not
//! [`Variable::secret`] ([`Variable::invalid`]).

use crate::ota::{ManifestSigner, PrivateDestinations};
use crate::token::{MIN_SECRET_BYTES, TokenSigner};

/// A budget of `requests` per window of `window_secs` seconds: `600/60s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub window_secs: u32,
}

/// The longest rate window: a day.
pub const MAX_WINDOW_SECS: u32 = 86_400;
/// The largest byte size a variable may name: 1 GiB.
pub const MAX_BYTE_SIZE: usize = 1 << 30;
/// The largest count a variable may name.
pub const MAX_COUNT: u32 = 1_000_000;

/// The kind of value a variable holds; [`Kind::check`] runs its parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`postgres_url`]
    PostgresUrl,
    /// [`host_port`]
    HostPort,
    /// [`token_signing_key`]
    TokenSigningKey,
    /// [`manifest_signing_key`]
    ManifestSigningKey,
    /// [`rate_limit`]
    RateLimit,
    /// [`byte_size`]
    ByteSize,
    /// [`count`]
    Count,
    /// [`private_destinations`]
    PrivateDestinations,
}

impl Kind {
    /// Parses `text` as this kind and forgets the value.
    pub fn check(self, text: &str) -> Result<(), String> {
        match self {
            Kind::PostgresUrl => postgres_url(text).map(drop),
            Kind::HostPort => host_port(text).map(drop),
            Kind::TokenSigningKey => token_signing_key(text).map(drop),
            Kind::ManifestSigningKey => manifest_signing_key(text).map(drop),
            Kind::RateLimit => rate_limit(text).map(drop),
            Kind::ByteSize => byte_size(text).map(drop),
            Kind::Count => count(text).map(drop),
            Kind::PrivateDestinations => private_destinations(text).map(drop),
        }
    }
}

/// One variable of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    pub kind: Kind,
    /// spin.toml's default; `None`: required.
    pub default: Option<&'static str>,
    /// Its value is never shown (in messages, logs or problem details).
    pub secret: bool,
}

impl Variable {
    /// Parses `value`; a bad one is [`Variable::invalid`]'s message.
    pub fn check(&self, value: &str) -> Result<(), String> {
        self.kind
            .check(value)
            .map_err(|reason| self.invalid(value, &reason))
    }

    /// `variable NAME = "VALUE" is invalid: REASON`; a secret's value is not shown,
    /// a long value is shortened.
    pub fn invalid(&self, value: &str, reason: &str) -> String {
        invalid(self.name, (!self.secret).then_some(value), reason)
    }
}

/// The message for a bad value of the variable `name`: its value (when given, so not
/// for secrets), shortened to 80 characters, and why it is refused.
pub fn invalid(name: &str, value: Option<&str>, reason: &str) -> String {
    match value {
        Some(value) if value.chars().count() > 80 => {
            let head: String = value.chars().take(77).collect();
            format!("variable {name} = {:?} is invalid: {reason}", head + "...")
        }
        Some(value) => format!("variable {name} = {value:?} is invalid: {reason}"),
        None => format!("variable {name} (secret, not shown) is invalid: {reason}"),
    }
}

/// Every variable in spin.toml, with its kind and default (a test checks the two agree).
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "db_url",
        kind: Kind::PostgresUrl,
        default: None,
        secret: true,
    },
    Variable {
        name: "db_host",
        kind: Kind::HostPort,
        default: Some("127.0.0.1:5432"),
        secret: false,
    },
    Variable {
        name: "token_signing_key",
        kind: Kind::TokenSigningKey,
        default: None,
        secret: true,
    },
    Variable {
        name: "manifest_signing_key",
        kind: Kind::ManifestSigningKey,
        default: None,
        secret: true,
    },
    Variable {
        name: "device_rate_limit",
        kind: Kind::RateLimit,
        default: Some("600/60s"),
        secret: false,
    },
    Variable {
        name: "unauthenticated_failure_rate_limit",
        kind: Kind::RateLimit,
        default: Some("60/60s"),
        secret: false,
    },
    Variable {
        name: "credential_failure_rate_limit",
        kind: Kind::RateLimit,
        default: Some("120/60s"),
        secret: false,
    },
    Variable {
        name: "max_body_bytes",
        kind: Kind::ByteSize,
        default: Some("1048576"),
        secret: false,
    },
    Variable {
        name: "max_batch_readings",
        kind: Kind::Count,
        default: Some("5000"),
        secret: false,
    },
    Variable {
        name: "max_query_buckets",
        kind: Kind::Count,
        default: Some("1500"),
        secret: false,
    },
    Variable {
        name: "state_max_bytes",
        kind: Kind::ByteSize,
        default: Some("16384"),
        secret: false,
    },
    Variable {
        name: "state_max_depth",
        kind: Kind::Count,
        default: Some("8"),
        secret: false,
    },
    Variable {
        name: "state_max_keys",
        kind: Kind::Count,
        default: Some("256"),
        secret: false,
    },
    Variable {
        name: "command_queue_limit",
        kind: Kind::Count,
        default: Some("100"),
        secret: false,
    },
    Variable {
        name: "command_max_bytes",
        kind: Kind::ByteSize,
        default: Some("16384"),
        secret: false,
    },
    Variable {
        name: "firmware_allowed_private",
        kind: Kind::PrivateDestinations,
        default: Some(""),
        secret: false,
    },
];

/// The app's variable `name`, if it is one.
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

const POSTGRES_URL: &str = "it takes a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE";

/// `db_url`: a `postgres://` (or `postgresql://`) URL naming a host. Spin checks the
/// host against `allowed_outbound_hosts`, so the key-value form (`host=… user=…`) and
/// Unix sockets are refused.
pub fn postgres_url(text: &str) -> Result<&str, String> {
    let rest = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{POSTGRES_URL} (it does not start with postgres://)"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return Err(format!("{POSTGRES_URL} (it names no host)"));
    }
    // Several hosts (`h1:5432,h2:5432`) are PostgreSQL's; each must be a host.
    for one in host_port.split(',') {
        host_port_parts(one).map_err(|why| format!("{POSTGRES_URL} ({why})"))?;
    }
    Ok(text)
}

const HOST_PORT: &str =
    "it takes the host:port of db_url, such as db.example:5432 or 127.0.0.1:5432";

/// `db_host`: `host:port` (or a host alone: port 5432), the host a name, an IPv4
/// address or a bracketed IPv6 address. The host and the port, if given.
pub fn host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    if text.contains("://") {
        return Err(format!("{HOST_PORT}, without a scheme"));
    }
    host_port_parts(text).map_err(|why| format!("{HOST_PORT} ({why})"))
}

fn host_port_parts(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ]")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "the address in brackets is not IPv6")?;
        match after {
            "" => (&text[..v6.len() + 2], None),
            _ => (
                &text[..v6.len() + 2],
                Some(after.strip_prefix(':').ok_or("a : must follow the ]")?),
            ),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'))
    {
        return Err("the host has characters a host name cannot have".into());
    }
    let port = match port {
        None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("the port is not a number from 1 to 65535")?,
        ),
    };
    Ok((host, port))
}

/// `token_signing_key`: at least [`MIN_SECRET_BYTES`] bytes, used as they are.
pub fn token_signing_key(text: &str) -> Result<TokenSigner, String> {
    if text.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "it must be at least {MIN_SECRET_BYTES} bytes long, and it is {}; make one with \
             `openssl rand -base64 32`",
            text.len()
        ));
    }
    TokenSigner::from_secret(text).map_err(|e| e.to_string())
}

/// `manifest_signing_key`: an Ed25519 private key in PKCS#8 PEM.
pub fn manifest_signing_key(text: &str) -> Result<ManifestSigner, String> {
    ManifestSigner::from_pem(text).map_err(|_| {
        "it takes an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----), \
         as `openssl genpkey -algorithm ed25519` writes it"
            .to_owned()
    })
}

/// `*_rate_limit`: `<requests>/<seconds>s` such as `600/60s` (the `s` may be left
/// out); requests at least 1, the window from 1 s to [`MAX_WINDOW_SECS`].
pub fn rate_limit(text: &str) -> Result<Rate, String> {
    let form = "it takes <requests>/<seconds>s, such as 600/60s";
    let (requests, window) = text.trim().split_once('/').ok_or_else(|| form.to_owned())?;
    let window = window.trim();
    let window = window.strip_suffix('s').unwrap_or(window);
    let number = |t: &str| {
        let t = t.trim();
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u32>().ok())
            .flatten()
    };
    let (Some(requests), Some(window_secs)) = (number(requests), number(window)) else {
        return Err(form.to_owned());
    };
    if requests == 0 {
        return Err(format!("{form}; the requests must be at least 1"));
    }
    if !(1..=MAX_WINDOW_SECS).contains(&window_secs) {
        return Err(format!(
            "{form}; the window must be from 1 to {MAX_WINDOW_SECS} seconds"
        ));
    }
    Ok(Rate {
        requests,
        window_secs,
    })
}

/// A size in bytes: a whole number, or one followed by `KiB`, `MiB` or `GiB`; from 1
/// byte to [`MAX_BYTE_SIZE`].
pub fn byte_size(text: &str) -> Result<usize, String> {
    let form = "it takes a size in bytes from 1 to 1 GiB, such as 1048576 or 1MiB";
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(form.to_owned()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| (1..=MAX_BYTE_SIZE as u64).contains(n))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| form.to_owned())
}

/// A count: a whole number from 1 to [`MAX_COUNT`].
pub fn count(text: &str) -> Result<u32, String> {
    let text = text.trim();
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u32>().ok())
        .flatten()
        .filter(|n| (1..=MAX_COUNT).contains(n))
        .ok_or_else(|| format!("it takes a whole number from 1 to {MAX_COUNT}"))
}

/// `firmware_allowed_private`: comma-separated CIDR ranges or addresses, host names
/// and name suffixes; empty allows none ([`PrivateDestinations::parse`]).
pub fn private_destinations(text: &str) -> Result<PrivateDestinations, String> {
    PrivateDestinations::parse(text).map_err(|e| {
        format!(
            "{e}; it takes a comma-separated list of CIDR ranges or addresses (10.0.0.0/8, \
             fd00::/8), host names (fw-cache) and name suffixes (.plant.internal), or nothing"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_take_requests_per_seconds() {
        let rate = |requests, window_secs| Rate {
            requests,
            window_secs,
        };
        assert_eq!(rate_limit("600/60s"), Ok(rate(600, 60)));
        assert_eq!(rate_limit(" 5 / 1 "), Ok(rate(5, 1)));
        assert_eq!(rate_limit("1/86400s"), Ok(rate(1, 86_400)));
        for bad in [
            "",
            "lots",
            "600",
            "0/60s",
            "600/0s",
            "600/60m",
            "-1/60s",
            "+1/60s",
            "600/86401s",
            "1/-5s",
            "99999999999/60s",
            "1.5/60s",
        ] {
            let err = rate_limit(bad).unwrap_err();
            assert!(err.contains("<requests>/<seconds>s"), "{bad}: {err}");
        }
        assert!(rate_limit("0/60s").unwrap_err().contains("at least 1"));
        assert!(rate_limit("1/90000s").unwrap_err().contains("86400"));
    }

    #[test]
    fn byte_sizes_and_counts_are_positive_and_bounded() {
        assert_eq!(byte_size("1048576"), Ok(1_048_576));
        assert_eq!(byte_size("1MiB"), Ok(1 << 20));
        assert_eq!(byte_size("64 KiB"), Ok(64 << 10));
        assert_eq!(byte_size("1GiB"), Ok(1 << 30));
        for bad in [
            "",
            "0",
            "-5",
            "lots",
            "1MB",
            "2GiB",
            "1e6",
            "99999999999999999999",
        ] {
            assert!(byte_size(bad).unwrap_err().contains("1 GiB"), "{bad}");
        }
        assert_eq!(count("1500"), Ok(1500));
        assert_eq!(count(" 1 "), Ok(1));
        assert_eq!(count("1000000"), Ok(MAX_COUNT));
        for bad in ["", "0", "-5", "+5", "1000001", "lots", "1.0", "4294967296"] {
            assert!(count(bad).unwrap_err().contains("whole number"), "{bad}");
        }
    }

    #[test]
    fn keys_are_checked_without_echoing_them() {
        let short = token_signing_key("short").unwrap_err();
        assert!(short.contains("at least 32 bytes"), "{short}");
        assert!(short.contains("it is 5"), "{short}");
        assert!(!short.contains("short\""), "{short}");
        assert!(token_signing_key(&"k".repeat(32)).is_ok());

        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n\
                   -----END PRIVATE KEY-----\n";
        assert!(manifest_signing_key(pem).is_ok());
        for bad in [
            "",
            "short",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            let err = manifest_signing_key(bad).err().unwrap();
            assert!(err.contains("Ed25519") && err.contains("PKCS#8"), "{err}");
        }
        let v = variable("token_signing_key").unwrap();
        let msg = v.check("hunter2").unwrap_err();
        assert!(
            msg.starts_with("variable token_signing_key (secret, not shown)"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn database_addresses() {
        for ok in [
            "postgres://toaster:secret@db.example:5432/toaster?sslmode=require",
            "postgresql://u@127.0.0.1/db",
            "postgres://[::1]:5432/db",
            "postgres://h1:5432,h2:5433/db",
        ] {
            assert_eq!(postgres_url(ok), Ok(ok));
        }
        for bad in [
            "",
            "host=db user=toaster",
            "mysql://db/x",
            "postgres:///toaster?host=/run/postgresql",
            "postgres://u@:5432/db",
            "postgres://db:port/x",
        ] {
            let err = postgres_url(bad).unwrap_err();
            assert!(
                err.contains("postgres://USER:PASSWORD@HOST"),
                "{bad}: {err}"
            );
        }
        assert_eq!(host_port("db.example:5432"), Ok(("db.example", Some(5432))));
        assert_eq!(host_port("db"), Ok(("db", None)));
        assert_eq!(host_port("[::1]:5432"), Ok(("[::1]", Some(5432))));
        for bad in [
            "",
            ":5432",
            "db:0",
            "db:65536",
            "db:x",
            "db/x:5432",
            "[::1",
            "postgres://db:5432",
        ] {
            let err = host_port(bad).unwrap_err();
            assert!(err.contains("host:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn private_destinations_name_the_bad_entry() {
        assert!(private_destinations("").unwrap().is_empty());
        assert!(private_destinations("10.0.0.0/8, fd00::/8, fw-cache, .plant.internal").is_ok());
        let err = private_destinations("10.0.0.0/8, 192.168.0.0/33")
            .err()
            .unwrap();
        assert!(err.starts_with("entry 2 "), "{err}");
        assert!(err.contains("CIDR"), "{err}");
    }

    #[test]
    fn every_default_parses_and_messages_show_plain_values() {
        for v in VARIABLES {
            if let Some(default) = v.default {
                v.check(default)
                    .unwrap_or_else(|e| panic!("{}: {e}", v.name));
            }
        }
        let msg = variable("device_rate_limit")
            .unwrap()
            .check("lots")
            .unwrap_err();
        assert_eq!(
            msg,
            "variable device_rate_limit = \"lots\" is invalid: it takes <requests>/<seconds>s, such as 600/60s"
        );
        let long = "x".repeat(200);
        let msg = variable("max_query_buckets")
            .unwrap()
            .check(&long)
            .unwrap_err();
        assert!(msg.contains(&format!("\"{}...\"", "x".repeat(77))), "{msg}");
        assert!(variable("nope").is_none());
    }
}

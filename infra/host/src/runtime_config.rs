//! The runtime-config file (`toaster up --runtime-config-file FILE`): Spin's TOML
//! format, of which this host supports the key-value stores.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"
//! url = "redis://:password@redis.example:6379/0"
//!
//! [key_value_store.archive]
//! type = "spin"              # SQLite
//! path = "archive.db"        # relative to this file's directory
//! ```
//!
//! Anything else in the file (another section, another store type, an unknown key)
//! stops the host at start with an error naming the file and the key, so a file
//! written for Spin never half-applies. Labels configured here but used by no
//! component are fine; the `default` label without configuration is the SQLite file
//! under the state directory. Redis URLs may hold a password: they are never
//! printed, not even in errors (only [`RedisUrl::redacted`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What this host takes from a runtime-config file.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// `[key_value_store.<label>]`, by label.
    pub key_value_stores: BTreeMap<String, KvStoreConfig>,
}

/// One `[key_value_store.<label>]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvStoreConfig {
    /// `type = "spin"`: SQLite. Without `path`, the state directory's `kv.sqlite`
    /// (where the `default` label lives without configuration).
    Spin { path: Option<PathBuf> },
    /// `type = "redis"`: keys as the component names them, in the URL's database.
    Redis { url: RedisUrl },
}

/// A Redis URL, validated at load. `Debug` and `Display` show it without credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Accepts `redis://[user][:password]@host[:port][/db]` and `redis+unix:///path`
    /// (or `unix:///path`). The error never repeats the URL.
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let parsed = url::Url::parse(url).map_err(|e| {
            format!("not a URL ({e}); expected redis://[:password@]host[:port][/db]")
        })?;
        match parsed.scheme() {
            "redis" | "redis+unix" | "unix" => {}
            "rediss" | "valkeys" => {
                return Err(
                    "TLS to Redis (rediss://) is not supported by this host yet; use redis:// (e.g. through a TLS sidecar)"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}; expected redis://[:password@]host[:port][/db]"
                ));
            }
        }
        if parsed.scheme() == "redis" {
            if parsed.host_str().unwrap_or("").is_empty() {
                return Err("the URL has no host; expected redis://host[:port][/db]".into());
            }
            let db = parsed.path().trim_start_matches('/');
            if !db.is_empty() && db.parse::<i64>().is_err() {
                return Err(format!(
                    "the path must be a database number (e.g. /0), not {db:?}"
                ));
            }
        }
        // The client's own parser has the last word (its errors can name the input, so
        // they are replaced by a generic message).
        redis::Client::open(url)
            .map_err(|_| "not a Redis URL the client accepts (redis://host:port/db)".to_string())?;
        Ok(RedisUrl(url.to_string()))
    }

    /// The URL itself, credentials included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `redis://host:port/db` (or the socket path): what logs and errors may show.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(u) if u.scheme() == "redis" => format!(
                "redis://{}:{}{}",
                u.host_str().unwrap_or(""),
                u.port().unwrap_or(6379),
                match u.path() {
                    "" | "/" => "/0".to_string(),
                    p => p.to_string(),
                }
            ),
            Ok(u) => format!("{}://{}", u.scheme(), u.path()),
            Err(_) => "redis://<invalid>".into(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for KvStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvStoreConfig::Spin { path: Some(p) } => write!(f, "SQLite {}", p.display()),
            KvStoreConfig::Spin { path: None } => f.write_str("SQLite (state directory)"),
            KvStoreConfig::Redis { url } => write!(f, "Redis {url}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("runtime config {}: {message}", file.display())]
pub struct RuntimeConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl RuntimeConfig {
    /// Reads and validates `file`. Relative store paths are resolved against the
    /// file's directory, as Spin does.
    pub fn load(file: &Path) -> Result<RuntimeConfig, RuntimeConfigError> {
        let fail = |message: String| RuntimeConfigError {
            file: file.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot read: {e}")))?;
        let base = file.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(fail)
    }

    /// Parses the text of a runtime-config file; `base` is its directory.
    pub fn parse(text: &str, base: &Path) -> Result<RuntimeConfig, String> {
        // toml's own error message quotes the offending line, which may hold a
        // password: report the position and the reason only.
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let (line, col) = line_col(text, s.start);
                    format!(" at line {line}, column {col}")
                })
                .unwrap_or_default();
            format!("invalid TOML{at}: {}", e.message().trim_end())
        })?;
        let mut config = RuntimeConfig::default();
        for (key, value) in &table {
            if key != "key_value_store" {
                return Err(format!(
                    "`{key}` is not supported by this host (it reads only [key_value_store.<label>] tables)"
                ));
            }
            let toml::Value::Table(stores) = value else {
                return Err(
                    "`key_value_store` must be a table of stores, e.g. [key_value_store.default]"
                        .into(),
                );
            };
            for (label, store) in stores {
                let toml::Value::Table(store) = store else {
                    return Err(format!(
                        "`key_value_store.{label}` must be a table with a `type`"
                    ));
                };
                let parsed = parse_store(label, store, base)?;
                config.key_value_stores.insert(label.clone(), parsed);
            }
        }
        Ok(config)
    }
}

fn parse_store(label: &str, store: &toml::Table, base: &Path) -> Result<KvStoreConfig, String> {
    let at = |key: &str| format!("key_value_store.{label}.{key}");
    let string = |key: &str| -> Result<Option<&str>, String> {
        match store.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{}` must be a string", at(key))),
        }
    };
    let kind = string("type")?
        .ok_or_else(|| format!("`{}` is missing: use \"redis\" or \"spin\"", at("type")))?;
    let allowed: &[&str] = match kind {
        "spin" => &["type", "path"],
        "redis" => &["type", "url"],
        other => {
            return Err(format!(
                "`{}` = {other:?} is not supported by this host: use \"redis\" or \"spin\"",
                at("type")
            ));
        }
    };
    if let Some(key) = store.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "`{}` is not a setting of a {kind:?} store (it takes {})",
            at(key),
            allowed[1..]
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match kind {
        "spin" => Ok(KvStoreConfig::Spin {
            path: string("path")?.map(|p| base.join(p)),
        }),
        _ => {
            let url = string("url")?.ok_or_else(|| {
                format!(
                    "`{}` is missing, e.g. url = \"redis://host:6379\"",
                    at("url")
                )
            })?;
            let url = RedisUrl::parse(url).map_err(|e| format!("`{}`: {e}", at("url")))?;
            Ok(KvStoreConfig::Redis { url })
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimeConfig, String> {
        RuntimeConfig::parse(text, Path::new("/etc/toaster"))
    }

    #[test]
    fn redis_and_spin_stores_are_read() {
        let config = parse(
            r#"
            [key_value_store.default]
            type = "redis"
            url = "redis://:hunter2@cache.internal:6380/3"

            [key_value_store.local]
            type = "spin"
            path = "data/local.db"

            [key_value_store.other]
            type = "spin"
            "#,
        )
        .unwrap();
        let stores = &config.key_value_stores;
        assert_eq!(stores.len(), 3);
        let KvStoreConfig::Redis { url } = &stores["default"] else {
            panic!("{stores:?}")
        };
        assert_eq!(url.expose(), "redis://:hunter2@cache.internal:6380/3");
        assert_eq!(
            stores["local"],
            KvStoreConfig::Spin {
                path: Some(PathBuf::from("/etc/toaster/data/local.db"))
            }
        );
        assert_eq!(stores["other"], KvStoreConfig::Spin { path: None });
        // An absolute path stays as it is.
        let abs = parse("[key_value_store.x]\ntype = \"spin\"\npath = \"/var/kv.db\"").unwrap();
        assert_eq!(
            abs.key_value_stores["x"],
            KvStoreConfig::Spin {
                path: Some(PathBuf::from("/var/kv.db"))
            }
        );
        assert!(parse("").unwrap().key_value_stores.is_empty());
    }

    #[test]
    fn the_password_never_shows() {
        let url =
            RedisUrl::parse("redis://admin:hunter2@cache.internal:6380/3?protocol=resp3").unwrap();
        for shown in [
            url.redacted(),
            format!("{url}"),
            format!("{url:?}"),
            format!("{:?}", KvStoreConfig::Redis { url: url.clone() }),
            format!("{}", KvStoreConfig::Redis { url: url.clone() }),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("admin"), "{shown}");
            assert!(shown.contains("cache.internal:6380/3"), "{shown}");
        }
        assert_eq!(
            RedisUrl::parse("redis://localhost").unwrap().redacted(),
            "redis://localhost:6379/0"
        );
        // Errors about a URL, and TOML syntax errors on its line, do not quote it.
        for text in [
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://:hunter2@host:99999\"",
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://:hunter2@host/notanumber\"",
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"rediss://:hunter2@host\"",
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"http://:hunter2@host\"",
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://:hunter2@host",
        ] {
            let err = parse(text).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            ("state_dir = \"/tmp\"", "`state_dir` is not supported"),
            (
                "[sqlite_database.default]\ntype = \"spin\"",
                "`sqlite_database`",
            ),
            (
                "[key_value_store.default]\ntype = \"azure_cosmos\"",
                "`key_value_store.default.type` = \"azure_cosmos\" is not supported",
            ),
            (
                "[key_value_store.default]\nurl = \"redis://h\"",
                "`key_value_store.default.type` is missing",
            ),
            (
                "[key_value_store.default]\ntype = \"redis\"",
                "`key_value_store.default.url` is missing",
            ),
            (
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://h\"\npath = \"x\"",
                "`key_value_store.default.path` is not a setting of a \"redis\" store",
            ),
            (
                "[key_value_store.cache]\ntype = \"spin\"\nurl = \"redis://h\"",
                "`key_value_store.cache.url` is not a setting of a \"spin\" store",
            ),
            (
                "[key_value_store.default]\ntype = \"redis\"\nurl = 6379",
                "`key_value_store.default.url` must be a string",
            ),
            (
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"rediss://h\"",
                "`key_value_store.default.url`: TLS to Redis",
            ),
            ("key_value_store = 1", "must be a table of stores"),
            (
                "[key_value_store]\ndefault = \"redis\"",
                "`key_value_store.default` must be a table",
            ),
            (
                "[key_value_store.default\ntype = 1",
                "invalid TOML at line 1",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_example_file_is_valid() {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/runtime-config/redis.toml");
        let config = RuntimeConfig::load(&file).unwrap();
        assert!(matches!(
            config.key_value_stores.get("default"),
            Some(KvStoreConfig::Redis { .. })
        ));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("toaster-rc-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("runtime-config.toml");
        std::fs::write(&file, "[key_value_store.default]\ntype = \"nope\"\n").unwrap();
        let err = RuntimeConfig::load(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("key_value_store.default.type"), "{err}");
        std::fs::write(
            &file,
            "[key_value_store.x]\ntype = \"spin\"\npath = \"x.db\"\n",
        )
        .unwrap();
        let ok = RuntimeConfig::load(&file).unwrap();
        assert_eq!(
            ok.key_value_stores["x"],
            KvStoreConfig::Spin {
                path: Some(dir.join("x.db"))
            }
        );
        let missing = RuntimeConfig::load(&dir.join("absent.toml")).unwrap_err();
        assert!(missing.to_string().contains("absent.toml"), "{missing}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

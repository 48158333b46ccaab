//! Where the commands find the server and the token: `--server`/`--token`, else
//! `TOASTER_SERVER`/`TOASTER_TOKEN` (clap reads both into the same flags), else the
//! config file `toaster login` wrote, else (the server only) `http://127.0.0.1:3000`,
//! where `toaster up` serves.
//!
//! The file is `$TOASTER_CONFIG`, else `$XDG_CONFIG_HOME/toaster/config.toml`, else
//! `~/.config/toaster/config.toml`. It holds a bearer token, so it is written with mode
//! 0600 (its directory 0700), whole or not at all (a temporary file renamed over it),
//! and a warning is printed when it is found readable by others.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use super::client::CliError;

/// Where `toaster up` serves by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:3000";

/// The config file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub server: Option<String>,
    pub token: Option<String>,
}

/// The config file's path; a usage error when no directory can be named.
pub fn path() -> Result<PathBuf, CliError> {
    path_from(|name| std::env::var_os(name))
}

fn path_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf, CliError> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(file) = set("TOASTER_CONFIG") {
        return Ok(file);
    }
    let dir = set("XDG_CONFIG_HOME")
        .or_else(|| set("HOME").map(|home| home.join(".config")))
        .ok_or_else(|| {
            CliError::usage("no config directory: set HOME, XDG_CONFIG_HOME or TOASTER_CONFIG")
        })?;
    Ok(dir.join("toaster").join("config.toml"))
}

/// The file at `path`, or `None` if there is none.
pub fn load(path: &Path) -> Result<Option<ConfigFile>, CliError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    warn_if_readable_by_others(path);
    toml::from_str(&text).map(Some).map_err(|e| {
        CliError::usage(format!(
            "{} is not a valid config file: {}",
            path.display(),
            e.message()
        ))
    })
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} holds a token and others may read it: chmod 600 it",
            path.display()
        );
    }
}

/// Writes `config` to `path`, mode 0600, replacing what was there in one rename.
pub fn save(path: &Path, config: &ConfigFile) -> Result<(), CliError> {
    let fail = |what: &str, e: std::io::Error| {
        CliError::usage(format!("cannot {what} {}: {e}", path.display()))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("create the directory of", e))?;
    }
    let text = format!(
        "# Written by `toaster login`. It holds a bearer token: keep it private (mode 0600).\n{}",
        toml::to_string(config)
            .map_err(|e| CliError::usage(format!("cannot write the config: {e}")))?
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(fail("write", e));
    }
    Ok(())
}

/// Removes the file; `false` if there was none.
pub fn remove(path: &Path) -> Result<bool, CliError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::usage(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

/// The server to talk to: the flag (or `TOASTER_SERVER`), else the file's, else
/// [`DEFAULT_SERVER`]. Only `http` and `https` URLs.
pub fn server(flag: Option<&str>, file: Option<&ConfigFile>) -> Result<Url, CliError> {
    let text = flag
        .map(str::to_owned)
        .or_else(|| file.and_then(|f| f.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    parse_server(&text)
}

/// An `http` or `https` URL without credentials in it.
pub fn parse_server(text: &str) -> Result<Url, CliError> {
    let url = Url::parse(text.trim())
        .map_err(|e| CliError::usage(format!("--server {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(CliError::usage(format!(
            "--server must be an http:// or https:// URL, such as {DEFAULT_SERVER}"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CliError::usage(
            "--server must not hold credentials: pass the token with --token or `toaster login`",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::usage(
            "--server must not have a query or fragment",
        ));
    }
    Ok(url)
}

/// The token: the flag (or `TOASTER_TOKEN`), else the file's.
pub fn token(flag: Option<&str>, file: Option<&ConfigFile>) -> Result<String, CliError> {
    flag.map(str::to_owned)
        .or_else(|| file.and_then(|f| f.token.clone()))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CliError::usage(
                "no token: pass --token, set TOASTER_TOKEN, or run `toaster login --server URL`",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_path_follows_the_environment() {
        assert_eq!(
            path_from(env(&[("TOASTER_CONFIG", "/x/c.toml"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/x/c.toml")
        );
        assert_eq!(
            path_from(env(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/xdg/toaster/config.toml")
        );
        assert_eq!(
            path_from(env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.config/toaster/config.toml")
        );
        assert_eq!(path_from(env(&[])).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn saved_files_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/toaster/config.toml");
        let config = ConfigFile {
            server: Some("http://127.0.0.1:3000".into()),
            token: Some("secret.token.value".into()),
        };
        save(&path, &config).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(load(&path).unwrap(), Some(config.clone()));
        // Rewritten in place, still private, no temporary file left.
        save(
            &path,
            &ConfigFile {
                token: Some("other".into()),
                ..config
            },
        )
        .unwrap();
        assert_eq!(
            load(&path).unwrap().unwrap().token.as_deref(),
            Some("other")
        );
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert_eq!(load(&path).unwrap(), None);
    }

    #[test]
    fn a_broken_file_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, "server = [\n").unwrap();
        let error = load(&path).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.render().contains("config.toml"), "{}", error.render());
        fs::write(&path, "colour = \"blue\"\n").unwrap();
        assert_eq!(load(&path).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn flags_beat_the_file_and_the_default_is_local() {
        let file = ConfigFile {
            server: Some("https://toaster.example/".into()),
            token: Some("from-file".into()),
        };
        assert_eq!(
            server(Some("http://10.0.0.1:8080"), Some(&file))
                .unwrap()
                .as_str(),
            "http://10.0.0.1:8080/"
        );
        assert_eq!(
            server(None, Some(&file)).unwrap().as_str(),
            "https://toaster.example/"
        );
        assert_eq!(
            server(None, None).unwrap().as_str(),
            "http://127.0.0.1:3000/"
        );
        assert_eq!(token(Some("flag"), Some(&file)).unwrap(), "flag");
        assert_eq!(token(None, Some(&file)).unwrap(), "from-file");
        assert_eq!(token(None, None).unwrap_err().exit_code(), 2);
        assert_eq!(token(Some(" "), None).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn only_plain_http_urls_are_servers() {
        for bad in [
            "ftp://x",
            "localhost:3000",
            "http://user:pw@host",
            "http://host/?q=1",
            "mailto:a@b",
        ] {
            assert_eq!(parse_server(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        assert!(parse_server("https://toaster.example/api").is_ok());
    }
}

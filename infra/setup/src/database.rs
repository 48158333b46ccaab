//! Administration of PostgreSQL databases: connecting, creating and dropping a database,
//! checking that a server answers. Used by `toaster up`, `toaster migrate` and the tests.
//!
//! Every connection the host makes (these, and the components' pools in
//! `toaster_host::pg`) uses [`tls`], which treats the URL's `sslmode` as Spin does: `disable` is plain TCP;
//! `prefer` (the default) and `require` try TLS and verify the server's certificate and
//! name against the system's roots, so a server with a self-signed certificate is refused
//! unless the URL says `sslmode=disable` (docs/host.md, "Spin compatibility").
//!
//! Database URLs may carry a password, so errors and logs show them with it removed.

use std::time::Duration;

use toaster_host::pg::tls;
use tokio_postgres::Client;

/// How long [`ping`] waits for a server before saying it is down.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid database name {0:?}: use 1 to 63 characters from a-z, 0-9 and _")]
    InvalidName(String),
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not connect to PostgreSQL at {url}: {}{}", detail(.source), tls_hint(.source))]
    Connect {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("database {0:?} already exists")]
    AlreadyExists(String),
    #[error("{what}: {}", detail(.source))]
    Query {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Opens one connection and drives it on a spawned task, which ends when the client is dropped.
pub async fn connect(url: &str) -> Result<Client, DatabaseError> {
    let (client, connection) = tokio_postgres::connect(url, tls())
        .await
        .map_err(|source| DatabaseError::Connect {
            url: redact(url),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %detail(&error), "PostgreSQL connection closed with an error");
        }
    });
    Ok(client)
}

/// Creates database `name` on the server of `admin_url` (a URL to any database there, by a
/// role allowed to create databases) and returns the URL of the new database.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, DatabaseError> {
    validate_name(name)?;
    let url = with_database(admin_url, name)?;
    let client = connect(admin_url).await?;
    // Identifiers cannot be bound as parameters; `name` is validated to [a-z0-9_] above.
    match client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
    {
        Ok(()) => Ok(url),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
            Err(DatabaseError::AlreadyExists(name.to_string()))
        }
        Err(source) => Err(DatabaseError::Query {
            what: format!("could not create database {name:?}"),
            source,
        }),
    }
}

/// Drops database `name` if it exists, disconnecting its sessions first (`WITH (FORCE)`).
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), DatabaseError> {
    validate_name(name)?;
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(|source| DatabaseError::Query {
            what: format!("could not drop database {name:?}"),
            source,
        })
}

/// Succeeds if the server at `url` accepts a connection and answers a query within
/// [`PING_TIMEOUT`].
pub async fn ping(url: &str) -> Result<(), DatabaseError> {
    let attempt = async {
        let client = connect(url).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|source| DatabaseError::Query {
                what: "ping".into(),
                source,
            })?;
        Ok(())
    };
    tokio::time::timeout(PING_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(DatabaseError::Timeout {
                url: redact(url),
                timeout: PING_TIMEOUT,
            })
        })
}

/// Names we create and drop: lowercase so they need no case games, short enough for
/// PostgreSQL's 63-byte identifiers.
pub fn validate_name(name: &str) -> Result<(), DatabaseError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DatabaseError::InvalidName(name.to_string()))
    }
}

/// `url` pointing at database `name` instead. Accepts `postgres://` / `postgresql://` URLs and
/// libpq `key=value` strings.
fn with_database(url: &str, name: &str) -> Result<String, DatabaseError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url).map_err(|e| DatabaseError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })?;
        parsed.set_path(&format!("/{name}"));
        Ok(parsed.into())
    } else {
        // In a key=value string the last dbname wins.
        Ok(format!("{url} dbname={name}"))
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.into()
        }
        Ok(_) => url.to_string(),
        // key=value form: drop the password pair.
        Err(_) => url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// What to do when the server's certificate was refused, for a connection error.
pub fn tls_hint(error: &tokio_postgres::Error) -> &'static str {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if e.to_string().contains("certificate") {
            return " (the server's TLS certificate is not trusted: give it one signed by a CA in \
                    this system's store, or add sslmode=disable to the URL for a server on a \
                    network you trust)";
        }
        source = e.source();
    }
    ""
}

/// The server's own message where there is one: tokio-postgres' Display says only "db error".
pub fn detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["a", "toaster_test_01", &"x".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a-b", "a\"b", "a b", &"x".repeat(64), "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_gets_the_new_database() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
                "t1"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://u@h", "t1").unwrap(),
            "postgresql://u@h/t1"
        );
        assert_eq!(
            with_database("host=h user=u dbname=postgres", "t1").unwrap(),
            "host=h user=u dbname=postgres dbname=t1"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("host=h password=secret"), "host=h password=***");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}

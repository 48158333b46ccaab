//! PostgreSQL through `spin_sdk::pg4`: opening the `db_url` connection, turning the
//! interface's errors into problems, transactions, and reading typed values from rows.
//!
//! # Errors
//!
//! - The database cannot be reached (`connection-failed`, a lost session, a pool
//!   timeout) → 503 with `Retry-After: `[`RETRY_AFTER_SECS`]: the client may retry.
//! - Anything else (bad SQL, a conversion failure, a constraint we did not expect) is
//!   our bug → 500, logged to stderr with the error (never the parameters). Neither
//!   body says anything about the SQL.
//!
//! [`Db::query`] and [`Db::execute`] apply that mapping. Where a call site expects a
//! particular failure (a unique violation meaning 409), use [`Db::try_query`] /
//! [`Db::try_execute`], look at [`sqlstate`], and hand everything else to
//! [`unavailable_or_internal`].
//!
//! # Timestamps
//!
//! Pass Unix milliseconds as `int8` and convert in SQL (`to_timestamp($1::int8 / 1000.0)`:
//! without the cast PostgreSQL infers `numeric` for `$1` and refuses the `int8`);
//! read them back as `(extract(epoch from ts) * 1000)::int8`. The interface's own
//! date-time mapping differs between Spin versions; integers do not.
//!
//! # Connections
//!
//! One [`Db`] is one session (the host pools them), so `BEGIN`/`COMMIT` across calls
//! work; see [`Db::transaction`].
//!
//! # Spin compatibility
//!
//! Every statement [`Db::query`] / [`Db::try_query`] sends is rewritten so that it never
//! yields zero rows on the wire, and the rows are given back without the marker: Spin
//! 4.0.0–4.0.2 never answer a `query` whose statement yields none ([`zero_rows`]).
//!
//! The same versions report an error raised while a query's rows stream (a unique
//! violation in `INSERT … RETURNING`, a row no partition accepts) as
//! `query-failed(text(…))` holding the printed `db-error`, not as `db-error` itself;
//! [`Db::try_query`] turns it back into one ([`recover_db_error`]), so call sites see
//! the SQLSTATE on every host.

use spin_sdk::pg4::{Connection, DbError, Decode, ParameterValue, PgError, QueryError, RowSet};
use toaster_core::problem::Problem;

use crate::{config, respond};

pub mod zero_rows;

/// Seconds a client is told to wait when the database is unreachable.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The variable holding the PostgreSQL URL.
pub const DB_URL_VARIABLE: &str = "db_url";

/// SQLSTATE of a unique violation.
pub const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE of a foreign-key violation.
pub const FOREIGN_KEY_VIOLATION: &str = "23503";
/// SQLSTATE of a missing table (such as a migration not applied yet).
pub const UNDEFINED_TABLE: &str = "42P01";

pub use spin_sdk::pg4::{DbValue, ParameterValue as Param};

/// One open PostgreSQL session.
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens the database named by the `db_url` variable. A missing or malformed
    /// variable is a deployment error (500 naming it, logged); an unreachable database
    /// is 503.
    pub fn open() -> Result<Db, Problem> {
        let url = config::get(DB_URL_VARIABLE, |text| {
            toaster_core::config::postgres_url(text).map(str::to_owned)
        })?;
        let conn = Connection::open(&url).map_err(|e| unavailable_or_internal(&e))?;
        Ok(Db { conn })
    }

    /// The underlying spin-sdk connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs a query; any failure becomes 503 or a logged 500.
    pub fn query(&self, sql: &str, params: &[ParameterValue]) -> Result<RowSet, Problem> {
        self.try_query(sql, params)
            .map_err(|e| unavailable_or_internal(&e))
    }

    /// Runs a statement; any failure becomes 503 or a logged 500. Returns the number
    /// of rows affected.
    pub fn execute(&self, sql: &str, params: &[ParameterValue]) -> Result<u64, Problem> {
        self.try_execute(sql, params)
            .map_err(|e| unavailable_or_internal(&e))
    }

    /// Runs a query and returns the interface's error as is, for call sites that
    /// expect a particular failure.
    // PgError is spin-sdk's; callers match on it, so it is returned unboxed.
    #[allow(clippy::result_large_err)]
    pub fn try_query(&self, sql: &str, params: &[ParameterValue]) -> Result<RowSet, PgError> {
        self.conn
            .query(&zero_rows::wrap(sql), params)
            .map(zero_rows::unwrap)
            .map_err(recover_db_error)
    }

    /// Runs a statement and returns the interface's error as is.
    // PgError is spin-sdk's; callers match on it, so it is returned unboxed.
    #[allow(clippy::result_large_err)]
    pub fn try_execute(&self, sql: &str, params: &[ParameterValue]) -> Result<u64, PgError> {
        self.conn.execute(sql, params)
    }

    /// Runs `work` inside `BEGIN` … `COMMIT`. If `work` fails the transaction is
    /// rolled back and its problem returned; a 2xx built after this returns `Ok` is
    /// sent only after the data is committed.
    pub fn transaction<T>(
        &self,
        work: impl FnOnce(&Db) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        self.execute("BEGIN", &[])?;
        match work(self) {
            Ok(value) => {
                self.execute("COMMIT", &[])?;
                Ok(value)
            }
            Err(problem) => {
                // If the rollback fails the session is broken; the host discards a
                // session dropped inside a transaction, so the data stays safe.
                if let Err(e) = self.try_execute("ROLLBACK", &[]) {
                    eprintln!("db: rollback failed: {}", describe(&e));
                }
                Err(problem)
            }
        }
    }
}

/// `error` with a `db-error` recovered from its text when Spin 4.0.x printed one into
/// `query-failed(text(…))` (see the module's "Spin compatibility"); anything else as is.
pub fn recover_db_error(error: PgError) -> PgError {
    let PgError::QueryFailed(QueryError::Text(text)) = &error else {
        return error;
    };
    match printed_sqlstate(text) {
        Some(code) => PgError::QueryFailed(QueryError::DbError(DbError {
            as_text: text.clone(),
            severity: "ERROR".to_owned(),
            code: code.to_owned(),
            message: text.clone(),
            detail: None,
            extras: Vec::new(),
        })),
        None => error,
    }
}

/// The SQLSTATE in the printed form of a `db-error` record (`… code: "23505", …`).
fn printed_sqlstate(text: &str) -> Option<&str> {
    text.match_indices("code: \"").find_map(|(at, marker)| {
        let code = text.get(at + marker.len()..at + marker.len() + 5)?;
        let closed = text[at + marker.len() + 5..].starts_with('"');
        (closed
            && code
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
        .then_some(code)
    })
}

/// 503 (with `Retry-After`) when the database is unreachable, else a 500. Either way
/// the error is logged to stderr, never put in the body.
pub fn unavailable_or_internal(error: &PgError) -> Problem {
    eprintln!("db: {}", describe(error));
    if is_unavailable(error) {
        Problem::unavailable(RETRY_AFTER_SECS)
            .with_detail("the database is unavailable; retry later")
    } else {
        respond::internal()
    }
}

/// Whether the error means the database cannot be reached right now.
pub fn is_unavailable(error: &PgError) -> bool {
    match error {
        PgError::ConnectionFailed(_) => true,
        // 08xxx connection exceptions, 57P0x shutdowns, 53xxx insufficient resources.
        PgError::QueryFailed(QueryError::DbError(db)) => {
            db.code.starts_with("08") || db.code.starts_with("57P") || db.code.starts_with("53")
        }
        _ => false,
    }
}

/// The SQLSTATE of a failed statement, such as [`UNIQUE_VIOLATION`].
pub fn sqlstate(error: &PgError) -> Option<&str> {
    match error {
        PgError::QueryFailed(QueryError::DbError(db)) => Some(db.code.as_str()),
        _ => None,
    }
}

/// The error for a log line: kind, SQLSTATE and the server's message. The server's
/// message may name a constraint or a column, never a parameter value.
pub fn describe(error: &PgError) -> String {
    match error {
        PgError::ConnectionFailed(m) => format!("connection failed: {m}"),
        PgError::BadParameter(m) => format!("bad parameter: {m}"),
        PgError::QueryFailed(QueryError::DbError(db)) => {
            format!("query failed: {} {}", db.code, db.message)
        }
        PgError::QueryFailed(QueryError::Text(m)) => format!("query failed: {m}"),
        PgError::ValueConversionFailed(m) => format!("value conversion failed: {m}"),
        PgError::Other(m) => format!("other: {m}"),
    }
}

/// Reads column `index` of `row` as a `T` (`String`, `i64`, `i32`, `bool`,
/// `serde_json::Value`, `Option<T>` for nullable columns, ...). A missing column or a
/// type that does not match is our bug: logged, 500.
pub fn column<T: Decode>(row: &[DbValue], index: usize) -> Result<T, Problem> {
    let Some(value) = row.get(index) else {
        eprintln!("db: row has no column {index}");
        return Err(respond::internal());
    };
    T::decode(value).map_err(|e| {
        eprintln!("db: column {index}: {e}");
        respond::internal()
    })
}

/// Reads a `text[]` column (NULL elements are dropped; a NULL array is empty).
pub fn text_array(row: &[DbValue], index: usize) -> Result<Vec<String>, Problem> {
    match row.get(index) {
        Some(DbValue::ArrayStr(items)) => Ok(items.iter().flatten().cloned().collect()),
        Some(DbValue::DbNull) => Ok(Vec::new()),
        other => {
            // The kind only: a value is data, not for logs.
            let kind = match other {
                Some(value) => format!("{value:?}")
                    .split('(')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                None => "missing".to_owned(),
            };
            eprintln!("db: column {index} is not text[] but {kind}");
            Err(respond::internal())
        }
    }
}

/// A `text[]` parameter.
pub fn text_array_param<S: AsRef<str>>(items: &[S]) -> ParameterValue {
    ParameterValue::ArrayStr(items.iter().map(|s| Some(s.as_ref().to_owned())).collect())
}

/// A `text` parameter.
pub fn text(value: impl Into<String>) -> ParameterValue {
    ParameterValue::Str(value.into())
}

/// An `int8` parameter.
pub fn int8(value: i64) -> ParameterValue {
    ParameterValue::Int64(value)
}

/// SQL NULL, of whatever type the statement expects (cast it: `$2::text IS NULL`).
pub fn null() -> ParameterValue {
    ParameterValue::DbNull
}

/// A nullable `int8` parameter.
pub fn opt_int8(value: Option<i64>) -> ParameterValue {
    value.map_or(ParameterValue::DbNull, ParameterValue::Int64)
}

/// A `bytea` parameter.
pub fn bytea(value: impl Into<Vec<u8>>) -> ParameterValue {
    ParameterValue::Binary(value.into())
}

/// A `bool` parameter.
pub fn boolean(value: bool) -> ParameterValue {
    ParameterValue::Boolean(value)
}

/// A nullable `text` parameter.
pub fn opt_text(value: Option<impl Into<String>>) -> ParameterValue {
    value.map_or(ParameterValue::DbNull, |v| ParameterValue::Str(v.into()))
}

/// A `jsonb` parameter.
pub fn jsonb(value: &serde_json::Value) -> ParameterValue {
    ParameterValue::Jsonb(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Spin 4.0.2 sends for a unique violation raised while rows stream: the
    /// printed `error` (wasmtime's Debug of the interface's types) as text.
    const SPIN_TEXT: &str = r#"QueryFailed(DbError(DbError { as-text: "db error: ERROR: duplicate key value violates unique constraint \"devices_pkey\"", severity: "ERROR", code: "23505", message: "duplicate key value violates unique constraint \"devices_pkey\"", detail: Some("Key (tenant_id, device_id)=(acme, d1) already exists."), extras: [] }))"#;

    #[test]
    fn a_db_error_printed_into_text_gets_its_sqlstate_back() {
        let error = recover_db_error(PgError::QueryFailed(QueryError::Text(SPIN_TEXT.into())));
        assert_eq!(sqlstate(&error), Some(UNIQUE_VIOLATION));
        assert!(!is_unavailable(&error));
        let gone = "QueryFailed(DbError(DbError { as-text: \"x\", severity: \"FATAL\", code: \"57P01\", message: \"terminating\" }))";
        let error = recover_db_error(PgError::QueryFailed(QueryError::Text(gone.into())));
        assert!(is_unavailable(&error), "a shutdown is still 503");
    }

    #[test]
    fn other_texts_and_errors_are_left_alone() {
        for text in [
            "query result exceeds limit of 52428800 bytes",
            "code: \"2350\"",
            "code: \"23505",
            "code: \"ab123\"",
            "",
        ] {
            let error = recover_db_error(PgError::QueryFailed(QueryError::Text(text.into())));
            assert_eq!(sqlstate(&error), None, "{text}");
        }
        let error = recover_db_error(PgError::ConnectionFailed("refused".into()));
        assert!(matches!(error, PgError::ConnectionFailed(_)));
    }
}

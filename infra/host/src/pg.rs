//! `spin:postgres/postgres@4.0.0` over tokio-postgres.
//!
//! One pool per database address. A component's `connection` resource holds one
//! pooled session for its whole life, so `BEGIN` … `COMMIT` across calls work;
//! statements are prepared once per pooled session and reused (deadpool's
//! statement cache). Hosts are checked against the component's
//! `allowed_outbound_hosts` before any connection is made. Every PostgreSQL or
//! conversion failure goes back to the component as the interface's `error`
//! variant: a component's bad SQL never traps.
//!
//! Conversions follow Spin's: `datetime` parameters are `timestamp` (no time zone),
//! `timestamp` parameters are Unix seconds bound as `timestamptz`; `timestamptz`
//! columns come back as UTC `datetime`s. Ranges are not supported yet.

// The error type is the interface's generated `error` variant, which every function
// here must return as is; boxing it would only move the cost.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::error::Error as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use postgres_types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;
use wasmtime::component::Resource;

use crate::bindings::postgres::{
    self, Column, DbDataType, DbError, DbValue, Error, Interval, ParameterValue, QueryError, RowSet,
};
use crate::state::HostState;

/// How long a component may wait for a pooled session before `connection-failed`.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long establishing a new session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pools this host keeps, keyed by the address components open.
pub struct PgPools {
    pools: Mutex<HashMap<String, Database>>,
    max_per_database: usize,
}

/// One address components open: its pool, and the hosts it names, parsed once (every
/// request opens its connection by address, and parsing the URL each time was about a
/// quarter of what `open` cost in a profile of one-reading ingest).
#[derive(Clone)]
struct Database {
    pool: Pool,
    hosts: Arc<[PgHost]>,
}

/// A server an address names, as `allowed_outbound_hosts` is checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PgHost {
    Tcp { name: String, port: u16 },
    Unix(std::path::PathBuf),
}

impl PgHost {
    fn all(config: &tokio_postgres::Config) -> Vec<PgHost> {
        let ports = config.get_ports();
        config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| match host {
                tokio_postgres::config::Host::Tcp(name) => PgHost::Tcp {
                    name: name.clone(),
                    port: ports.get(i).or(ports.first()).copied().unwrap_or(5432),
                },
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => PgHost::Unix(path.clone()),
            })
            .collect()
    }
}

impl PgPools {
    pub fn new(max_per_database: usize) -> PgPools {
        PgPools {
            pools: Mutex::new(HashMap::new()),
            max_per_database,
        }
    }

    /// The database at `address`: from the registry, or parsed and registered.
    fn database(&self, address: &str) -> Result<Database, Error> {
        let mut pools = self
            .pools
            .lock()
            .map_err(|_| Error::Other("pool registry poisoned".into()))?;
        if let Some(database) = pools.get(address) {
            return Ok(database.clone());
        }
        let mut config = tokio_postgres::Config::from_str(address)
            .map_err(|e| Error::ConnectionFailed(format!("invalid address: {e}")))?;
        let hosts: Arc<[PgHost]> = PgHost::all(&config).into();
        config.connect_timeout(CONNECT_TIMEOUT);
        let manager = Manager::from_config(
            config,
            tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.max_per_database)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::Other(format!("cannot build a pool: {e}")))?;
        let database = Database { pool, hosts };
        pools.insert(address.to_string(), database.clone());
        Ok(database)
    }

    /// `SELECT 1` through the pool: the host's health check.
    pub async fn ping(&self, address: &str) -> Result<(), String> {
        let database = self.database(address).map_err(|e| format!("{e:?}"))?;
        let client = database.pool.get().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The TLS connector of every PostgreSQL connection: rustls with the system's root
/// certificates (as native-tls, Spin's, uses OpenSSL's), loaded once. tokio-postgres
/// calls it only when the URL's `sslmode` is not `disable`.
pub fn tls() -> MakeRustlsConnect {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not read a system root certificate");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(
            added,
            ignored,
            "system root certificates for PostgreSQL TLS"
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    MakeRustlsConnect::new(config.as_ref().clone())
}

/// The resource behind a component's `connection`.
pub struct Connection {
    client: Option<deadpool_postgres::Object>,
    /// Set when the component began a transaction it has not ended. If the
    /// resource is dropped in that state (a trap, a forgotten COMMIT) the session is
    /// rolled back before it returns to the pool, so no transaction leaks into the
    /// next request.
    in_transaction: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && self.in_transaction
        {
            {
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            if client.batch_execute("ROLLBACK").await.is_err() {
                                // A broken session must not go back to the pool.
                                let _ = deadpool_postgres::Object::take(client);
                            }
                        });
                    }
                    // No runtime to roll back on: close the session instead.
                    Err(_) => {
                        let _ = deadpool_postgres::Object::take(client);
                    }
                }
            }
        }
    }
}

impl HostState {
    fn pg_client(&mut self, c: &Resource<Connection>) -> wasmtime::Result<&mut Connection> {
        Ok(self.table.get_mut(c)?)
    }
}

impl postgres::Host for HostState {}

impl postgres::HostConnection for HostState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let database = match self.services.pg.database(&address) {
            Ok(database) => database,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(denied) = self.check_pg_hosts(&database.hosts) {
            return Ok(Err(Error::ConnectionFailed(denied)));
        }
        let pool = database.pool;
        let client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(Error::ConnectionFailed(match e.source() {
                    Some(s) => format!("{e}: {s}"),
                    None => e.to_string(),
                })));
            }
        };
        Ok(Ok(self.table.push(Connection {
            client: Some(client),
            in_transaction: false,
        })?))
    }

    async fn query(
        &mut self,
        conn: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let conn = self.pg_client(&conn)?;
        Ok(conn.run_query(&statement, params).await)
    }

    async fn execute(
        &mut self,
        conn: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let conn = self.pg_client(&conn)?;
        Ok(conn.run_execute(&statement, params).await)
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

impl HostState {
    fn check_pg_hosts(&self, hosts: &[PgHost]) -> Result<(), String> {
        if hosts.is_empty() {
            return Err("the address names no host".into());
        }
        for host in hosts {
            match host {
                PgHost::Unix(path) => {
                    return Err(format!(
                        "unix socket {} is not allowed: components reach PostgreSQL over TCP",
                        path.display()
                    ));
                }
                PgHost::Tcp { name, port } => {
                    if !self
                        .component
                        .allowed_hosts
                        .allows("postgres", name, Some(*port))
                    {
                        return Err(format!(
                            "postgres://{name}:{port} is not in this component's allowed_outbound_hosts"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Connection {
    fn client(&self) -> Result<&deadpool_postgres::Object, Error> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::ConnectionFailed("connection already released".into()))
    }

    fn track_transaction(&mut self, statement: &str) {
        let first = statement
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == ';')
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match first.as_str() {
            "BEGIN" | "START" => self.in_transaction = true,
            "COMMIT" | "ROLLBACK" | "END" | "ABORT" => self.in_transaction = false,
            _ => {}
        }
    }

    async fn run_query(
        &mut self,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> Result<RowSet, Error> {
        self.track_transaction(statement);
        let client = self.client()?;
        let stmt = client.prepare_cached(statement).await.map_err(pg_error)?;
        let params = to_sql_params(params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client.query(&stmt, &refs).await.map_err(pg_error)?;
        let columns: Vec<Column> = stmt
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                data_type: data_type(c.type_()),
            })
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(columns.len());
            for (i, col) in stmt.columns().iter().enumerate() {
                values.push(db_value(row, i, col.type_())?);
            }
            out.push(values);
        }
        Ok(RowSet { columns, rows: out })
    }

    async fn run_execute(
        &mut self,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> Result<u64, Error> {
        self.track_transaction(statement);
        let client = self.client()?;
        let stmt = client.prepare_cached(statement).await.map_err(pg_error)?;
        let params = to_sql_params(params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        client.execute(&stmt, &refs).await.map_err(pg_error)
    }
}

fn pg_error(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        return Error::QueryFailed(QueryError::DbError(DbError {
            as_text: db.to_string(),
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            extras: [
                ("hint", db.hint()),
                ("table", db.table()),
                ("column", db.column()),
                ("constraint", db.constraint()),
                ("schema", db.schema()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
            .collect(),
        }));
    }
    if e.is_closed() {
        return Error::ConnectionFailed(format!("the database connection was lost: {e}"));
    }
    // A parameter tokio-postgres could not serialise for the prepared type.
    let text = match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    if text.contains("error serializing parameter") {
        return Error::BadParameter(text);
    }
    if text.contains("error deserializing column") {
        return Error::ValueConversionFailed(text);
    }
    if text.contains("timed out") || text.contains("connection") {
        return Error::ConnectionFailed(text);
    }
    Error::QueryFailed(QueryError::Text(text))
}

type Param = Box<dyn ToSql + Sync + Send>;

fn to_sql_params(params: Vec<ParameterValue>) -> Result<Vec<Param>, Error> {
    params
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            to_sql(p).map_err(|m| Error::BadParameter(format!("parameter ${}: {m}", i + 1)))
        })
        .collect()
}

fn to_sql(p: ParameterValue) -> Result<Param, String> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        ParameterValue::Date((y, m, d)) => Box::new(date(y, m, d)?),
        ParameterValue::Time((h, mi, s, ns)) => Box::new(time(h, mi, s, ns)?),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            Box::new(NaiveDateTime::new(date(y, mo, d)?, time(h, mi, s, ns)?))
        }
        ParameterValue::Timestamp(secs) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
                .ok_or_else(|| format!("timestamp {secs} is out of range"))?,
        ),
        ParameterValue::Uuid(s) => {
            Box::new(uuid::Uuid::parse_str(&s).map_err(|e| format!("invalid uuid: {e}"))?)
        }
        ParameterValue::Jsonb(bytes) => Box::new(
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("invalid JSON: {e}"))?,
        ),
        ParameterValue::Decimal(s) => Box::new(decimal(&s)?),
        ParameterValue::ArrayInt32(v) => Box::new(v),
        ParameterValue::ArrayInt64(v) => Box::new(v),
        ParameterValue::ArrayStr(v) => Box::new(v),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.iter()
                .map(|d| d.as_deref().map(decimal).transpose())
                .collect::<Result<Vec<_>, _>>()?,
        ),
        ParameterValue::Interval(i) => Box::new(PgInterval(i.micros, i.days, i.months)),
        ParameterValue::DbNull => Box::new(Null),
        ParameterValue::RangeInt32(_)
        | ParameterValue::RangeInt64(_)
        | ParameterValue::RangeDecimal(_) => {
            return Err("range parameters are not supported by the toaster host".into());
        }
    })
}

fn date(y: i32, m: u8, d: u8) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| format!("invalid date {y}-{m}-{d}"))
}

fn time(h: u8, mi: u8, s: u8, ns: u32) -> Result<NaiveTime, String> {
    NaiveTime::from_hms_nano_opt(h.into(), mi.into(), s.into(), ns)
        .ok_or_else(|| format!("invalid time {h}:{mi}:{s}.{ns}"))
}

fn decimal(s: &str) -> Result<rust_decimal::Decimal, String> {
    rust_decimal::Decimal::from_str_exact(s).map_err(|e| format!("invalid decimal {s:?}: {e}"))
}

/// SQL NULL of whatever type the statement expects.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// PostgreSQL's binary interval: microseconds, days, months.
#[derive(Debug)]
struct PgInterval(i64, i32, i32);

impl ToSql for PgInterval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
        out.extend_from_slice(&self.2.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("invalid interval".into());
        }
        let micros = i64::from_be_bytes(raw[0..8].try_into()?);
        let days = i32::from_be_bytes(raw[8..12].try_into()?);
        let months = i32::from_be_bytes(raw[12..16].try_into()?);
        Ok(PgInterval(micros, days, months))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// The raw bytes of a value of a type we don't convert.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB | Type::JSON => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        ref other => DbDataType::Other(other.name().to_string()),
    }
}

fn conv<T>(
    r: Result<Option<T>, tokio_postgres::Error>,
    f: impl FnOnce(T) -> Result<DbValue, String>,
) -> Result<DbValue, Error> {
    match r {
        Ok(Some(v)) => f(v).map_err(Error::ValueConversionFailed),
        Ok(None) => Ok(DbValue::DbNull),
        Err(e) => Err(Error::ValueConversionFailed(match e.source() {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        })),
    }
}

fn datetime(v: NaiveDateTime) -> DbValue {
    DbValue::Datetime((
        v.year(),
        v.month() as u8,
        v.day() as u8,
        v.hour() as u8,
        v.minute() as u8,
        v.second() as u8,
        v.nanosecond(),
    ))
}

fn db_value(row: &tokio_postgres::Row, i: usize, t: &Type) -> Result<DbValue, Error> {
    match *t {
        Type::BOOL => conv(row.try_get::<_, Option<bool>>(i), |v| {
            Ok(DbValue::Boolean(v))
        }),
        Type::CHAR => conv(row.try_get::<_, Option<i8>>(i), |v| Ok(DbValue::Int8(v))),
        Type::INT2 => conv(row.try_get::<_, Option<i16>>(i), |v| Ok(DbValue::Int16(v))),
        Type::INT4 => conv(row.try_get::<_, Option<i32>>(i), |v| Ok(DbValue::Int32(v))),
        Type::INT8 => conv(row.try_get::<_, Option<i64>>(i), |v| Ok(DbValue::Int64(v))),
        Type::FLOAT4 => conv(row.try_get::<_, Option<f32>>(i), |v| {
            Ok(DbValue::Floating32(v))
        }),
        Type::FLOAT8 => conv(row.try_get::<_, Option<f64>>(i), |v| {
            Ok(DbValue::Floating64(v))
        }),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            conv(row.try_get::<_, Option<String>>(i), |v| Ok(DbValue::Str(v)))
        }
        Type::BYTEA => conv(row.try_get::<_, Option<Vec<u8>>>(i), |v| {
            Ok(DbValue::Binary(v))
        }),
        Type::DATE => conv(row.try_get::<_, Option<NaiveDate>>(i), |v| {
            Ok(DbValue::Date((v.year(), v.month() as u8, v.day() as u8)))
        }),
        Type::TIME => conv(row.try_get::<_, Option<NaiveTime>>(i), |v| {
            Ok(DbValue::Time((
                v.hour() as u8,
                v.minute() as u8,
                v.second() as u8,
                v.nanosecond(),
            )))
        }),
        Type::TIMESTAMP => conv(row.try_get::<_, Option<NaiveDateTime>>(i), |v| {
            Ok(datetime(v))
        }),
        Type::TIMESTAMPTZ => conv(
            row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i),
            |v| Ok(datetime(v.naive_utc())),
        ),
        Type::UUID => conv(row.try_get::<_, Option<uuid::Uuid>>(i), |v| {
            Ok(DbValue::Uuid(v.to_string()))
        }),
        Type::JSONB | Type::JSON => conv(row.try_get::<_, Option<serde_json::Value>>(i), |v| {
            serde_json::to_vec(&v)
                .map(DbValue::Jsonb)
                .map_err(|e| e.to_string())
        }),
        Type::NUMERIC => conv(row.try_get::<_, Option<rust_decimal::Decimal>>(i), |v| {
            Ok(DbValue::Decimal(v.to_string()))
        }),
        Type::INT4_ARRAY => conv(row.try_get::<_, Option<Vec<Option<i32>>>>(i), |v| {
            Ok(DbValue::ArrayInt32(v))
        }),
        Type::INT8_ARRAY => conv(row.try_get::<_, Option<Vec<Option<i64>>>>(i), |v| {
            Ok(DbValue::ArrayInt64(v))
        }),
        Type::NUMERIC_ARRAY => conv(
            row.try_get::<_, Option<Vec<Option<rust_decimal::Decimal>>>>(i),
            |v| {
                Ok(DbValue::ArrayDecimal(
                    v.into_iter().map(|d| d.map(|d| d.to_string())).collect(),
                ))
            },
        ),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => {
            conv(row.try_get::<_, Option<Vec<Option<String>>>>(i), |v| {
                Ok(DbValue::ArrayStr(v))
            })
        }
        Type::INTERVAL => conv(row.try_get::<_, Option<PgInterval>>(i), |v| {
            Ok(DbValue::Interval(Interval {
                micros: v.0,
                days: v.1,
                months: v.2,
            }))
        }),
        _ => conv(row.try_get::<_, Option<Raw>>(i), |v| {
            Ok(DbValue::Unsupported(v.0))
        }),
    }
}

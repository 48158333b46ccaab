//! The interface's backend: one pool of sessions per database address, over
//! tokio-postgres and deadpool (see [`super`]).

// The error type is the interface's generated `error` variant, which every function
// here must return as is; boxing it would only move the cost.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::error::Error as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::future::{BoxFuture, FutureExt};
use postgres_types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::convert::{Param, data_type, db_value, pg_error, to_sql_params};
use super::{Client, ClientFactory, PgHost};
use crate::bindings::postgres::{Column, Error, ParameterValue, RowSet};

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
/// request opens its connection by address; parsing the URL each time was a large part
/// of what `open` cost: BENCHMARKS.md, "Measured choices in the code").
#[derive(Clone)]
struct Database {
    pool: Pool,
    hosts: Arc<[PgHost]>,
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

impl ClientFactory for PgPools {
    fn hosts(&self, address: &str) -> Result<Arc<[PgHost]>, Error> {
        Ok(self.database(address)?.hosts)
    }

    fn connect<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Box<dyn Client>, Error>> {
        async move {
            let pool = self.database(address)?.pool;
            let client = pool.get().await.map_err(|e| {
                Error::ConnectionFailed(match e.source() {
                    Some(s) => format!("{e}: {s}"),
                    None => e.to_string(),
                })
            })?;
            Ok(Box::new(Connection {
                client: Some(client),
                in_transaction: false,
            }) as Box<dyn Client>)
        }
        .boxed()
    }
}

impl Client for Connection {
    fn query<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<ParameterValue>,
    ) -> BoxFuture<'a, Result<RowSet, Error>> {
        self.run_query(statement, params).boxed()
    }

    fn execute<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<ParameterValue>,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        self.run_execute(statement, params).boxed()
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

/// A pooled session: what a component's `connection` stands for.
struct Connection {
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
        let refs = param_refs(&params);
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
        let refs = param_refs(&params);
        client.execute(&stmt, &refs).await.map_err(pg_error)
    }
}

/// The parameters as tokio-postgres takes them.
fn param_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

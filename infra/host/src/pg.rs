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

mod convert;
mod pool;

use std::sync::Arc;

use futures::future::BoxFuture;
use wasmtime::component::{Resource, ResourceTable};

use crate::bindings::postgres::{self, Connection, Error, ParameterValue, RowSet};
use crate::outbound::AllowedHosts;

pub use pool::{PgPools, tls};

/// Where the interface's sessions come from, as Spin's `ClientFactory`: [`PgPools`]
/// in the host.
pub trait ClientFactory: Send + Sync {
    /// The servers `address` names, checked against the component's
    /// `allowed_outbound_hosts` before any connection is made.
    fn hosts(&self, address: &str) -> Result<Arc<[PgHost]>, Error>;
    /// A session with the database at `address`, the component's until it drops the
    /// connection.
    fn connect<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Box<dyn Client>, Error>>;
}

/// One session: what a component's `connection` stands for.
pub trait Client: Send + Sync {
    fn query<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<ParameterValue>,
    ) -> BoxFuture<'a, Result<RowSet, Error>>;
    fn execute<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<ParameterValue>,
    ) -> BoxFuture<'a, Result<u64, Error>>;
}

/// A server an address names, as `allowed_outbound_hosts` is checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgHost {
    Tcp { name: String, port: u16 },
    Unix(std::path::PathBuf),
}

impl PgHost {
    pub fn all(config: &tokio_postgres::Config) -> Vec<PgHost> {
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

/// The interface in one instance: where sessions come from, where the component may
/// connect, and the connections it has open (by the number of their handle).
pub struct Postgres {
    factory: Arc<dyn ClientFactory>,
    allowed: Arc<AllowedHosts>,
    open: ResourceTable,
}

impl Postgres {
    pub fn new(factory: Arc<dyn ClientFactory>, allowed: Arc<AllowedHosts>) -> Postgres {
        Postgres {
            factory,
            allowed,
            open: ResourceTable::new(),
        }
    }

    fn client(&mut self, c: &Resource<Connection>) -> wasmtime::Result<&mut Box<dyn Client>> {
        Ok(self
            .open
            .get_mut(&Resource::<Box<dyn Client>>::new_borrow(c.rep()))?)
    }
}

impl postgres::Host for Postgres {}

impl postgres::HostConnection for Postgres {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let hosts = match self.factory.hosts(&address) {
            Ok(hosts) => hosts,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(denied) = check_hosts(&self.allowed, &hosts) {
            return Ok(Err(Error::ConnectionFailed(denied)));
        }
        let client = match self.factory.connect(&address).await {
            Ok(client) => client,
            Err(e) => return Ok(Err(e)),
        };
        let handle = self.open.push(client)?;
        Ok(Ok(Resource::new_own(handle.rep())))
    }

    async fn query(
        &mut self,
        conn: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let client = self.client(&conn)?;
        Ok(client.query(&statement, params).await)
    }

    async fn execute(
        &mut self,
        conn: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let client = self.client(&conn)?;
        Ok(client.execute(&statement, params).await)
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.open
            .delete(Resource::<Box<dyn Client>>::new_own(conn.rep()))?;
        Ok(())
    }
}

/// Whether `allowed` lets a component reach every server of an address.
fn check_hosts(allowed: &AllowedHosts, hosts: &[PgHost]) -> Result<(), String> {
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
                if !allowed.allows("postgres", name, Some(*port)) {
                    return Err(format!(
                        "postgres://{name}:{port} is not in this component's allowed_outbound_hosts"
                    ));
                }
            }
        }
    }
    Ok(())
}

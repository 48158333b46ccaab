//! The per-request store data: each host interface's state in this instance (as Spin
//! assembles its factors' instance states), plus WASI's and the store's limits. A
//! fresh `HostState` is built for every request from what the component was granted
//! ([`ComponentConfig`]) and the app's backends ([`Services`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::http::OutgoingHooks;
use crate::kv::{KeyValue, KvStores};
use crate::outbound::AllowedHosts;
use crate::pg::{PgPools, Postgres};
use crate::variables::ComponentVariables;

/// What one component of the manifest was granted, resolved at start.
#[derive(Debug)]
pub struct ComponentConfig {
    pub id: Arc<str>,
    pub variables: Arc<BTreeMap<String, String>>,
    pub kv_labels: Arc<BTreeSet<String>>,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub environment: Vec<(String, String)>,
}

/// Shared by every request: backends behind the host interfaces.
pub struct Services {
    pub kv: KvStores,
    pub pg: Arc<PgPools>,
}

pub struct HostState {
    pub wasi: WasiCtx,
    pub http_ctx: WasiHttpCtx,
    /// WASI's and wasi:http's resources.
    pub table: ResourceTable,
    pub outgoing: OutgoingHooks,
    pub key_value: KeyValue,
    pub variables: ComponentVariables,
    pub postgres: Postgres,
    pub limits: StoreLimits,
}

impl HostState {
    /// The interfaces' states for one instance of `component`.
    pub fn new(
        component: &ComponentConfig,
        services: &Services,
        wasi: WasiCtx,
        limits: StoreLimits,
    ) -> HostState {
        HostState {
            wasi,
            http_ctx: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outgoing: OutgoingHooks::new(component.id.clone(), component.allowed_hosts.clone()),
            key_value: KeyValue::new(services.kv.clone(), component.kv_labels.clone()),
            variables: ComponentVariables::new(component.id.clone(), component.variables.clone()),
            postgres: Postgres::new(services.pg.clone(), component.allowed_hosts.clone()),
            limits,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

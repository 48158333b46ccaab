//! The per-request store data: one field per host interface, plus what the
//! component was granted. A fresh `HostState` is built for every request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::KvStores;
use crate::outbound::AllowedHosts;
use crate::pg::PgPools;

/// What one component of the manifest was granted, resolved at start.
#[derive(Debug)]
pub struct ComponentConfig {
    pub id: String,
    pub variables: BTreeMap<String, String>,
    pub kv_labels: BTreeSet<String>,
    pub allowed_hosts: AllowedHosts,
    pub environment: Vec<(String, String)>,
}

/// Shared by every request: backends behind the host interfaces.
pub struct Services {
    pub kv: KvStores,
    pub pg: PgPools,
}

pub struct HostState {
    pub component: Arc<ComponentConfig>,
    pub services: Arc<Services>,
    pub wasi: WasiCtx,
    pub http_ctx: WasiHttpCtx,
    pub table: ResourceTable,
    pub outgoing: crate::http::OutgoingHooks,
    pub limits: StoreLimits,
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

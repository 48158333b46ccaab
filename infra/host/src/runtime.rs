//! Loading an application and running one request through it.
//!
//! One `Engine`; each component compiled once (and cached on disk as a `.cwasm`,
//! keyed by the wasm's hash and the engine's compatibility hash) and
//! pre-instantiated once; then a fresh `Store` and instance per request, from the
//! pooling allocator. A request is bounded in time (epoch interruption for wasm
//! code, plus a wall-clock deadline, `deadline`, for time spent in host calls) and
//! in memory.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::bindings;
use crate::deadline::{self, Deadlines};
use crate::guest_output::{GuestOutput, RequestId, Stream};
use crate::kv::{KeyValue, KvStores};
use crate::manifest::{ComponentDecl, Manifest};
use crate::outbound::AllowedHosts;
use crate::pg::{PgPools, Postgres};
use crate::problem;
use crate::routes::{Router, spin_headers};
use crate::state::{ComponentConfig, HostState, Services};
use crate::variables::{ComponentVariables, Variables};

/// How often the epoch advances; the request timeout is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time a request may take until its response headers are ready.
    pub request_timeout: Duration,
    /// Requests handled at once; further ones wait for a slot.
    pub max_concurrent_requests: usize,
    /// Largest request body accepted; larger ones get 413 before the component runs.
    pub max_body_bytes: usize,
    /// Linear memory one instance may grow to.
    pub max_instance_memory: usize,
    /// PostgreSQL sessions per database address.
    pub pg_pool_size: usize,
    /// How long a connection may wait for a request's head, whether idle between
    /// requests or trickling its header lines, before it is closed.
    pub header_timeout: Duration,
    /// How long a request whose body has arrived waits for a slot when every slot is
    /// busy; after that it is answered 503 with `Retry-After`.
    pub queue_timeout: Duration,
    /// Open connections at most; 0 derives it from the open-file limit (which the
    /// server raises to its hard limit at start).
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 256,
            max_body_bytes: 4 * 1024 * 1024,
            max_instance_memory: 128 * 1024 * 1024,
            pg_pool_size: 16,
            header_timeout: Duration::from_secs(15),
            queue_timeout: Duration::from_secs(1),
            max_connections: 0,
            max_connections_per_client: 256,
        }
    }
}

/// The wasmtime engine and the components it has compiled, shared by every app
/// loaded in this process (tests load many apps; each wasm is compiled once).
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    compiled: Arc<Mutex<HashMap<[u8; 32], Component>>>,
    cache_dir: Option<PathBuf>,
    /// Requests in flight, aborted past their wall-clock deadline by the epoch thread.
    deadlines: Deadlines,
}

impl Runtime {
    pub fn new(limits: &Limits, cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        let instances = (limits.max_concurrent_requests * 2).max(64) as u32;
        pool.total_component_instances(instances);
        pool.total_core_instances(instances * 8);
        pool.total_memories(instances * 2);
        pool.total_tables(instances * 8);
        pool.max_memory_size(limits.max_instance_memory);
        // A Rust component touches a megabyte or two of linear memory per request.
        // Resetting that with memset keeps the pages resident; the default (madvise)
        // makes every request fault them back in and flush TLBs on every core, which
        // cost more than everything else a trivial request does.
        pool.linear_memory_keep_resident(4 << 20);
        pool.table_keep_resident(1 << 20);
        pool.decommit_batch_size(32);
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        // Each request runs on a fiber stack from the pool; without zeroing, every page a
        // request touched stays resident for good, so a burst of concurrent requests
        // (or one deeply recursing guest) left its stacks' memory behind after the load
        // was gone. Zeroing keeps the top 16 KiB resident (memset) and gives the rest
        // back: after a burst at most `max_concurrent_requests` x 16 KiB of stacks stay.
        // Its cost and effect: BENCHMARKS.md, "Hardening".
        config.async_stack_zeroing(true);
        pool.async_stack_keep_resident(16 << 10);
        // The components export and import wasi:http 0.2 only: no component-model
        // async. Without the concurrency machinery a Store is smaller and every host
        // call skips its task bookkeeping (its cost: BENCHMARKS.md, "Measured choices in
        // the code").
        config.concurrency_support(false);
        // `TOASTER_PERF_MAP=1`: wasmtime writes /tmp/perf-PID.map, so that `perf report`
        // names guest functions (docs/host.md, Profiling).
        if std::env::var_os("TOASTER_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the wasmtime engine")?;

        let weak = engine.weak();
        let deadlines = Deadlines::default();
        let watched = deadlines.clone();
        std::thread::Builder::new()
            .name("toaster-epoch".into())
            .spawn(move || {
                let mut last_scan = std::time::Instant::now();
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                    let now = std::time::Instant::now();
                    if now.duration_since(last_scan) >= deadline::SCAN_EVERY {
                        watched.scan(now);
                        last_scan = now;
                    }
                }
            })
            .context("cannot start the epoch thread")?;
        Ok(Runtime {
            engine,
            compiled: Default::default(),
            cache_dir,
            deadlines,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `path`, or takes it from the in-process or on-disk cache.
    pub fn component(&self, path: &Path) -> anyhow::Result<Component> {
        let wasm =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut h = Sha256::new();
        h.update(&wasm);
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut compat);
        h.update(std::hash::Hasher::finish(&compat).to_le_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some(c) = self
            .compiled
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(&key)
        {
            return Ok(c.clone());
        }
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}.cwasm", hex::encode(key))));
        let component = match cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: the file was written by `Component::serialize` of an engine with
            // the same compatibility hash (part of the file name) and lives in a
            // directory only this host writes.
            Some(p) => match unsafe { Component::deserialize_file(&self.engine, p) } {
                Ok(c) => c,
                Err(_) => self.compile(&wasm, path, cached.as_deref())?,
            },
            None => self.compile(&wasm, path, cached.as_deref())?,
        };
        self.compiled
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(key, component.clone());
        Ok(component)
    }

    fn compile(&self, wasm: &[u8], path: &Path, cache: Option<&Path>) -> anyhow::Result<Component> {
        let component = Component::new(&self.engine, wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} is not a valid WebAssembly component", path.display()))?;
        if let Some(cache) = cache
            && let Ok(bytes) = component.serialize()
        {
            if let Some(dir) = cache.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, cache);
            }
        }
        Ok(component)
    }
}

struct LoadedComponent {
    pre: ProxyPre<HostState>,
    config: Arc<ComponentConfig>,
    /// Its id, for the lines it writes ([`crate::guest_output`]).
    name: Arc<str>,
}

/// A loaded application: routes, components ready to instantiate, and services.
pub struct App {
    runtime: Runtime,
    router: Router,
    components: HashMap<String, LoadedComponent>,
    services: Arc<Services>,
    limits: Limits,
    /// `db_url`, when the app declares one: what `/healthz` checks.
    health_db: Option<String>,
}

/// Interfaces a component may import besides `wasi:*@0.2.x` (docs/host.md, "Platform contract").
pub const ALLOWED_SPIN_IMPORTS: &[&str] = &[
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/variables@2.0.0",
    "spin:postgres/postgres@4.0.0",
];

impl App {
    pub fn load(
        runtime: &Runtime,
        manifest: &Manifest,
        variables: &Variables,
        kv: KvStores,
        limits: Limits,
    ) -> anyhow::Result<App> {
        let router = Router::new(
            manifest
                .routes
                .iter()
                .map(|t| (t.route.as_str(), t.component.as_str())),
        )?;
        let services = Arc::new(Services {
            kv: kv.clone(),
            pg: Arc::new(PgPools::new(limits.pg_pool_size)),
        });
        let mut linker: Linker<HostState> = Linker::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::key_value::add_to_linker::<_, HasSelf<KeyValue>>(&mut linker, |s| {
            &mut s.key_value
        })?;
        bindings::variables::add_to_linker::<_, HasSelf<ComponentVariables>>(&mut linker, |s| {
            &mut s.variables
        })?;
        bindings::postgres::add_to_linker::<_, HasSelf<Postgres>>(&mut linker, |s| {
            &mut s.postgres
        })?;

        let routed: BTreeSet<&str> = router.components().collect();
        let mut components = HashMap::new();
        for (id, decl) in &manifest.components {
            if !routed.contains(id.as_str()) {
                continue;
            }
            let path = manifest.root.join(&decl.source);
            if !path.exists() {
                bail!(
                    "component {id:?}: {} does not exist. Build it with `toaster up --build` (or `{}`)",
                    path.display(),
                    decl.build
                        .as_ref()
                        .map(|b| b.command.as_str())
                        .unwrap_or("its build command")
                );
            }
            let component = runtime
                .component(&path)
                .with_context(|| format!("component {id:?} failed to compile"))?;
            check_imports(id, &component, runtime.engine())?;
            let config = component_config(id, decl, variables, &kv)?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {id:?} imports something this host does not provide")
                })?;
            let pre = ProxyPre::new(pre)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {id:?} does not export wasi:http/incoming-handler")
                })?;
            components.insert(
                id.clone(),
                LoadedComponent {
                    pre,
                    config,
                    name: Arc::from(id.as_str()),
                },
            );
        }
        Ok(App {
            runtime: runtime.clone(),
            router,
            components,
            services,
            limits,
            health_db: variables.get("db_url").map(str::to_string),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `GET /healthz`: PostgreSQL answers, or 503.
    pub async fn health(&self) -> Result<(), String> {
        match &self.health_db {
            None => Ok(()),
            Some(url) => {
                match tokio::time::timeout(Duration::from_secs(2), self.services.pg.ping(url)).await
                {
                    Ok(r) => r,
                    Err(_) => Err("PostgreSQL did not answer within 2 s".into()),
                }
            }
        }
    }

    /// Routes and runs one request whose body has already been read (and bounded).
    /// Returns the response and the component that served it, for the access log.
    /// What the component writes to stdout and stderr is logged with `request_id`.
    pub async fn handle(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        client_addr: SocketAddr,
        scheme: Scheme,
        request_id: RequestId,
    ) -> (http::Response<HyperOutgoingBody>, Option<String>) {
        let Some(m) = self.router.route(parts.uri.path()) else {
            return (problem::not_found(parts.uri.path()), None);
        };
        let Some(component) = self.components.get(&m.component) else {
            return (problem::not_found(parts.uri.path()), None);
        };
        let id = Some(m.component.clone());
        let mut parts = parts;
        let scheme_str = if matches!(scheme, Scheme::Https) {
            "https"
        } else {
            "http"
        };
        let full_url = {
            let host = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let path_and_query = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let mut url =
                String::with_capacity(scheme_str.len() + 3 + host.len() + path_and_query.len());
            for part in [scheme_str, "://", host, path_and_query] {
                url.push_str(part);
            }
            url
        };
        // A client's own `spin-*` headers never reach the component (and there
        // usually are none: look before allocating).
        if parts
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("spin-"))
        {
            let incoming: Vec<_> = parts
                .headers
                .keys()
                .filter(|k| k.as_str().starts_with("spin-"))
                .cloned()
                .collect();
            for k in incoming {
                parts.headers.remove(k);
            }
        }
        // Room for the seven at once, rather than the map growing while they go in.
        parts.headers.reserve(7);
        for (name, value) in spin_headers(&m, &full_url, client_addr) {
            parts.headers.insert(name, value);
        }
        let body = Full::new(body)
            .map_err(|e: std::convert::Infallible| -> wasmtime_wasi_http::Error { match e {} });
        let req = http::Request::from_parts(parts, body);
        match self.run(component, req, scheme, request_id).await {
            Ok(resp) => (resp, id),
            Err(Failure::Timeout) => {
                tracing::warn!(component = %m.component, %request_id, "request timed out after {:?}", self.limits.request_timeout);
                (problem::timeout(), id)
            }
            Err(Failure::Trap(e)) => {
                // The cause (a trap's wasm backtrace) runs over several lines: it goes
                // last, after the fields that say which request it was.
                tracing::error!(component = %m.component, %request_id, cause = %e, "component failed");
                (problem::internal(), id)
            }
        }
    }

    /// The store one request runs in: the component's instance state, its output
    /// lines tagged with `request_id`, and its memory and time bounded.
    fn new_store(&self, component: &LoadedComponent, request_id: RequestId) -> Store<HostState> {
        let mut wasi = WasiCtx::builder();
        let name = &component.name;
        wasi.stdout(GuestOutput::new(name.clone(), request_id, Stream::Stdout))
            .stderr(GuestOutput::new(name.clone(), request_id, Stream::Stderr));
        for (k, v) in &component.config.environment {
            wasi.env(k, v);
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_instance_memory)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        let state = HostState::new(&component.config, &self.services, wasi.build(), limits);
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        let ticks =
            (self.limits.request_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    async fn run<B>(
        &self,
        component: &LoadedComponent,
        req: http::Request<B>,
        scheme: Scheme,
        request_id: RequestId,
    ) -> Result<http::Response<HyperOutgoingBody>, Failure>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut store = self.new_store(component, request_id);

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = WasiHttpView::http(store.data_mut())
            .new_incoming_request(scheme, req)
            .map_err(|e| Failure::Trap(format!("{e:?}")))?;
        let out = WasiHttpView::http(store.data_mut())
            .new_response_outparam(sender)
            .map_err(|e| Failure::Trap(format!("{e:?}")))?;
        let pre = component.pre.clone();
        let mut guest = Box::pin(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        // The guest runs on this task, beside the wait for its response, until the
        // response head and its first part are ready (or the deadline passes: the epoch
        // thread signals `watch`, see `deadline`, and dropping the guest's call cancels
        // it). Whatever it still has to do then (the rest of a streamed body, work after
        // responding) goes on in a task of its own: a task per request from the start,
        // or the guest polled before the response side, cost more CPU (BENCHMARKS.md,
        // "Host overhead").
        let watch = self
            .runtime
            .deadlines
            .watch(std::time::Instant::now() + self.limits.request_timeout);
        let deadline = watch.passed();
        let front = async move {
            match receiver.await {
                Ok(Ok(resp)) => Some(
                    buffer_small_body(resp)
                        .await
                        .map_err(|e| Failure::Trap(format!("the response body failed: {e:?}"))),
                ),
                Ok(Err(code)) => Some(Err(Failure::Trap(format!(
                    "component answered with error {code:?}"
                )))),
                // The response channel closed unset: the guest's result tells why.
                Err(_) => None,
            }
        };
        tokio::pin!(deadline, front);
        let mut finished: Option<wasmtime::Result<()>> = None;
        let mut answered: Option<Option<Result<http::Response<HyperOutgoingBody>, Failure>>> = None;
        let outcome = std::future::poll_fn(|cx| {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Failure::Timeout));
            }
            if answered.is_none()
                && let Poll::Ready(answer) = front.as_mut().poll(cx)
            {
                answered = Some(answer);
            }
            if finished.is_none()
                && let Poll::Ready(result) = guest.as_mut().poll(cx)
            {
                finished = Some(result);
                // The guest is done and its store gone, so the answer is complete (or
                // will never come): take it in this poll. Waiting for the wake-up the
                // guest's last write sent cost a trivial request a turn of the
                // scheduler (BENCHMARKS.md, "Host overhead").
                if answered.is_none()
                    && let Poll::Ready(answer) = front.as_mut().poll(cx)
                {
                    answered = Some(answer);
                }
            }
            match (answered.take(), finished.as_ref()) {
                (Some(Some(result)), _) => Poll::Ready(result),
                (Some(None), Some(Ok(()))) => Poll::Ready(Err(Failure::Trap(
                    "the component never set a response".into(),
                ))),
                (Some(None), Some(Err(e))) if is_timeout(e) => Poll::Ready(Err(Failure::Timeout)),
                (Some(None), Some(Err(e))) => Poll::Ready(Err(Failure::Trap(format!("{e:?}")))),
                // No response and the guest still running: wait for it to end.
                (answer, _) => {
                    answered = answer;
                    Poll::Pending
                }
            }
        })
        .await;
        if outcome.is_ok() {
            finish_after_response(finished, guest, component.config.id.clone(), request_id);
        }
        outcome
    }
}

/// What component `id` is granted: its variables rendered, its key-value labels
/// (each must be configured), its allowed hosts parsed, its environment.
fn component_config(
    id: &str,
    decl: &ComponentDecl,
    variables: &Variables,
    kv: &KvStores,
) -> anyhow::Result<Arc<ComponentConfig>> {
    let rendered_hosts = decl
        .allowed_outbound_hosts
        .iter()
        .map(|h| variables.render(h))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
    for label in &decl.key_value_stores {
        if !kv.contains(label) {
            bail!(
                "component {id:?} uses key-value store {label:?}, which is not configured (only \"default\" is, unless a runtime config defines more)"
            );
        }
    }
    Ok(Arc::new(ComponentConfig {
        id: Arc::from(id),
        variables: Arc::new(
            variables
                .render_all(&decl.variables)
                .with_context(|| format!("component {id:?}: variables"))?,
        ),
        kv_labels: Arc::new(decl.key_value_stores.iter().cloned().collect()),
        allowed_hosts: Arc::new(
            AllowedHosts::parse(&rendered_hosts).with_context(|| format!("component {id:?}"))?,
        ),
        environment: decl
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }))
}

/// A guest still running after its response goes on in a task of its own; one that
/// failed after responding is logged.
fn finish_after_response(
    finished: Option<wasmtime::Result<()>>,
    guest: std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send>>,
    id: Arc<str>,
    request_id: RequestId,
) {
    match finished {
        None => {
            tokio::spawn(async move {
                if let Err(e) = guest.await {
                    tracing::warn!(component = %id, %request_id, cause = ?e, "component failed after its response");
                }
            });
        }
        Some(Err(e)) => {
            tracing::warn!(component = %id, %request_id, cause = ?e, "component failed after its response")
        }
        Some(Ok(())) => {}
    }
}

/// Responses up to this size are sent with a Content-Length in one write; larger
/// ones are streamed (chunked) after their first part.
const BUFFERED_RESPONSE_BYTES: usize = 256 * 1024;

/// Waits for a small response body to complete, so it goes out with a
/// `Content-Length` in a single write instead of as chunks (the guest streams its
/// body). A body that fails before completion becomes a 500 instead of a truncated
/// 200. Larger bodies are streamed after their first `BUFFERED_RESPONSE_BYTES`.
async fn buffer_small_body(
    resp: http::Response<HyperOutgoingBody>,
) -> Result<http::Response<HyperOutgoingBody>, wasmtime_wasi_http::Error> {
    let (mut parts, mut body) = resp.into_parts();
    let mut buf = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                parts.headers.remove(http::header::TRANSFER_ENCODING);
                parts.headers.insert(
                    http::header::CONTENT_LENGTH,
                    http::HeaderValue::from(buf.len()),
                );
                let full = Full::new(buf.freeze())
                    .map_err(|e: std::convert::Infallible| -> wasmtime_wasi_http::Error {
                        match e {}
                    })
                    .boxed_unsync();
                return Ok(http::Response::from_parts(parts, full));
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    if buf.len() <= BUFFERED_RESPONSE_BYTES {
                        continue;
                    }
                    let head = http_body::Frame::data(buf.freeze());
                    return Ok(http::Response::from_parts(parts, prepend(head, body)));
                }
                Err(frame) => {
                    // Trailers: stream what we have, then the trailers and the rest.
                    let mut frames = Vec::new();
                    if !buf.is_empty() {
                        frames.push(http_body::Frame::data(buf.freeze()));
                    }
                    frames.push(frame);
                    let mut rest = body;
                    for f in frames.into_iter().rev() {
                        rest = prepend(f, rest);
                    }
                    return Ok(http::Response::from_parts(parts, rest));
                }
            },
        }
    }
}

fn prepend(first: http_body::Frame<Bytes>, rest: HyperOutgoingBody) -> HyperOutgoingBody {
    use futures::StreamExt;
    let head = futures::stream::once(async move { Ok(first) });
    let tail = http_body_util::BodyStream::new(rest);
    http_body_util::StreamBody::new(head.chain(tail)).boxed_unsync()
}

enum Failure {
    Timeout,
    Trap(String),
}

fn is_timeout(e: &wasmtime::Error) -> bool {
    matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    )
}

/// Refuses a component that imports an interface outside the platform contract.
fn check_imports(id: &str, component: &Component, engine: &Engine) -> anyhow::Result<()> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        let ok = (name.starts_with("wasi:") && name.contains("@0.2."))
            || ALLOWED_SPIN_IMPORTS.contains(&name);
        if !ok {
            bail!("component {id:?} imports {name}, which is outside Toaster's platform contract");
        }
    }
    Ok(())
}

/// Lists a component's imports and exports: for tests and `toaster inspect`.
pub fn component_interfaces(
    runtime: &Runtime,
    path: &Path,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let c = runtime.component(path)?;
    let ty = c.component_type();
    let imports = ty
        .imports(runtime.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    let exports = ty
        .exports(runtime.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    Ok((imports, exports))
}

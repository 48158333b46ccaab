//! `toaster up`: checks the manifest and every variable, builds what is missing,
//! starts a local PostgreSQL when none is configured, migrates, and serves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use toaster_core::token::{AccessClaims, TokenSigner};
use toaster_host::runtime_config::RuntimeConfig;
use toaster_host::{HostConfig, Limits, Runtime, manifest::Manifest};
use toaster_setup::{database, keys, localpg, migrate};

use toaster_cli::build;

#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Address and port to serve on (0.0.0.0:PORT for every interface).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Run every component's build command first.
    #[arg(long)]
    build: bool,
    /// PostgreSQL to use; without it (and without a db_url variable) a local one is started under .toaster/.
    #[arg(long, env = "TOASTER_DATABASE_URL")]
    database_url: Option<String>,
    /// Set an application variable, NAME=VALUE (repeatable).
    #[arg(long = "variable", value_parser = parse_variable)]
    variables: Vec<(String, String)>,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where local state lives (key-value store, local PostgreSQL, keys); default: .toaster next to the manifest.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Seconds a request may take.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Requests handled at once.
    #[arg(long, default_value_t = 256)]
    max_concurrent: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// How long a connection may wait for a request's head (idle, or sending headers)
    /// before it is closed, e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = toaster_setup::duration::parse)]
    header_timeout: Duration,
    /// How long a request waits for a free slot before it gets 503 with Retry-After, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = toaster_setup::duration::parse)]
    queue_timeout: Duration,
    /// Open connections at most; 0: what the open-file limit allows, less a reserve.
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Open connections from one client address at most (raise it for many devices
    /// behind one NAT address).
    #[arg(long, default_value_t = 256)]
    max_connections_per_client: usize,
    /// Spin runtime-config file (TOML): where key-value store labels live, e.g. Redis
    /// shared by several hosts. Without it, `default` is SQLite under the state dir.
    #[arg(long, env = "TOASTER_RUNTIME_CONFIG_FILE")]
    runtime_config_file: Option<PathBuf>,
    /// Check the manifest and every variable, then exit: nothing is built, started or
    /// created. E.g. before `spin up`, with the same SPIN_VARIABLE_* environment.
    #[arg(long)]
    check: bool,
}

fn parse_variable(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((k.to_string(), v.to_string()))
}

/// The manifest `toaster up` serves; when it does not exist, where it was looked for
/// and how to name another.
fn load_manifest(path: &Path) -> anyhow::Result<Manifest> {
    if !path.exists() {
        let cwd = std::env::current_dir().unwrap_or_default();
        let looked = if path.is_absolute() {
            path.to_path_buf()
        } else {
            cwd.join(path)
        };
        let mut message = format!("no manifest at {}", looked.display());
        // Run from a subdirectory of the app: name the one above.
        let above = cwd
            .ancestors()
            .skip(1)
            .map(|dir| dir.join("spin.toml"))
            .find(|candidate| candidate.is_file());
        match above {
            Some(found) if path == Path::new("spin.toml") => message.push_str(&format!(
                ": run toaster up in {}, or pass --from {}",
                found.parent().unwrap_or(Path::new(".")).display(),
                found.display()
            )),
            _ => message.push_str(
                ": run toaster up in the directory that holds the app's spin.toml, or pass \
                 --from PATH/TO/spin.toml",
            ),
        }
        bail!(message);
    }
    Manifest::load(path)
}

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    let manifest = load_manifest(&args.manifest)?;
    // A mistake in the runtime config stops us before anything is built or started.
    let runtime_config = match &args.runtime_config_file {
        Some(file) => RuntimeConfig::load(file)?,
        None => RuntimeConfig::default(),
    };
    // Fail fast on a taken port, before building or starting PostgreSQL.
    if !args.check
        && let Err(e) = std::net::TcpListener::bind(args.listen)
        && e.kind() == std::io::ErrorKind::AddrInUse
    {
        bail!(
            "{} is already in use: stop the other server or pass --listen 127.0.0.1:<another port>",
            args.listen
        );
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| manifest.root.join(".toaster"));
    let Resolved {
        mut variables,
        mut origin,
        start_local_pg,
    } = resolve_variables(&args, &manifest, &state_dir)?;
    if args.check {
        println!(
            "{}: the manifest and its variables are fine",
            args.manifest.display()
        );
        return Ok(());
    }

    build_components(&args, &manifest)?;
    let mut local_pg = None;
    if start_local_pg {
        let pg = local_postgres(&state_dir).await?;
        variables.insert("db_url".into(), pg.url("toaster"));
        local_pg = Some(pg);
        derive_db_host(&manifest, &mut variables, &mut origin);
    }
    run_migrations(&manifest, &variables).await?;

    let runtime = Runtime::new(&limits(&args), Some(state_dir.join("cache")))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = toaster_host::start_with_runtime_config(
        &runtime,
        HostConfig {
            manifest: args.manifest.clone(),
            listen: args.listen,
            tls,
            variables: variables.clone(),
            state_dir: state_dir.clone(),
            limits: limits(&args),
        },
        &runtime_config,
    )
    .await?;

    // Everything that can fail is done before we say we serve.
    let token = operator_token(&variables)?;
    println!(
        "Toaster is serving {} on {scheme}://{}",
        manifest.name,
        host.addr()
    );
    println!("  health: curl -s {scheme}://{}/healthz", host.addr());
    if let Some(token) = token {
        println!("  operator token (12 h): {token}");
        if manifest.components.contains_key("console") {
            // The token rides in the fragment, which browsers never send: it reaches
            // neither the server nor its access log.
            println!(
                "  console: {scheme}://{}/console/#token={token}",
                browser_addr(host.addr())
            );
        }
    }

    wait_for_shutdown().await;
    eprintln!("shutting down");
    host.shutdown().await?;
    if let Some(pg) = local_pg {
        pg.stop().await?;
    }
    Ok(())
}

/// The variables `toaster up` serves with, where each came from (for messages), and
/// whether a local PostgreSQL is to supply `db_url`.
struct Resolved {
    variables: BTreeMap<String, String>,
    origin: BTreeMap<String, String>,
    start_local_pg: bool,
}

/// Every variable is checked before anything is built or started: unknown names,
/// missing values and values the components could not use stop us here. Signing keys
/// the app declares and nobody gave are made once, under the state directory.
fn resolve_variables(
    args: &UpArgs,
    manifest: &Manifest,
    state_dir: &Path,
) -> anyhow::Result<Resolved> {
    let mut variables: BTreeMap<String, String> = args.variables.iter().cloned().collect();
    let mut origin = BTreeMap::new();
    let declared = |name: &str| manifest.variables.contains_key(name);
    let env_has =
        |name: &str| std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())).is_ok();
    toaster_host::variables::check_declared(&manifest.variables, variables.keys())?;
    if declared("db_url")
        && let Some(url) = &args.database_url
    {
        variables.insert("db_url".into(), url.clone());
        origin.insert("db_url".to_owned(), "--database-url".to_owned());
    }
    let start_local_pg =
        declared("db_url") && !variables.contains_key("db_url") && !env_has("db_url");
    let mut supplied = BTreeSet::new();
    if start_local_pg {
        supplied.insert("db_url".to_owned());
        supplied.insert("db_host".to_owned());
    } else {
        derive_db_host(manifest, &mut variables, &mut origin);
    }
    for (name, file, make) in [
        (
            "token_signing_key",
            "token_signing_key",
            keys::new_token_secret as fn() -> String,
        ),
        (
            "manifest_signing_key",
            "manifest_signing_key.pem",
            keys::new_ed25519_pem,
        ),
    ] {
        if declared(name) && !variables.contains_key(name) && !env_has(name) {
            let path = state_dir.join(file);
            if args.check && !path.exists() {
                // Made on the first real start.
                supplied.insert(name.to_owned());
                continue;
            }
            variables.insert(name.into(), keys::load_or_create(&path, make)?);
            origin.insert(name.to_owned(), path.display().to_string());
        }
    }
    toaster_host::variables::check_values(
        manifest,
        &variables,
        &origin,
        |k| std::env::var(k).ok(),
        &supplied,
    )?;
    Ok(Resolved {
        variables,
        origin,
        start_local_pg: declared("db_url") && start_local_pg,
    })
}

/// Builds every component with `--build`, else those not built yet.
fn build_components(args: &UpArgs, manifest: &Manifest) -> anyhow::Result<()> {
    let missing = build::missing(manifest);
    if args.build {
        build::build(manifest, &[])?;
    } else if !missing.is_empty() {
        eprintln!(
            "component(s) {} not built yet: building",
            missing.join(", ")
        );
        build::build(manifest, &missing)?;
    }
    Ok(())
}

/// A PostgreSQL of our own under the state directory, with the app's database.
async fn local_postgres(state_dir: &Path) -> anyhow::Result<localpg::LocalPostgres> {
    let pg = localpg::LocalPostgres::start(&state_dir.join("postgres"))
        .await
        .context("starting a local PostgreSQL (or pass --database-url)")?;
    let admin = pg.url("postgres");
    match database::create_database(&admin, "toaster").await {
        Ok(_) | Err(database::DatabaseError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    eprintln!(
        "local PostgreSQL on 127.0.0.1:{} (data in {})",
        pg.port(),
        pg.dir().display()
    );
    Ok(pg)
}

/// Migrations, when the app has them and a database is configured.
async fn run_migrations(
    manifest: &Manifest,
    variables: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let db_url = variables
        .get("db_url")
        .cloned()
        .or_else(|| std::env::var("SPIN_VARIABLE_DB_URL").ok());
    let migrations = manifest.root.join("schemas/sql");
    if let (Some(url), true) = (&db_url, migrations.is_dir()) {
        let mut client = database::connect(url)
            .await
            .context("connecting to PostgreSQL for migrations")?;
        let report = migrate::migrate(&mut client, &migrations).await?;
        if !report.applied.is_empty() {
            eprintln!("applied migrations: {}", report.applied.join(", "));
        }
    }
    Ok(())
}

/// The runtime's limits, as the flags set them.
fn limits(args: &UpArgs) -> Limits {
    Limits {
        request_timeout: Duration::from_secs(args.request_timeout),
        max_concurrent_requests: args.max_concurrent,
        max_body_bytes: args.max_body_bytes,
        header_timeout: args.header_timeout,
        queue_timeout: args.queue_timeout,
        max_connections: args.max_connections,
        max_connections_per_client: args.max_connections_per_client,
        ..Limits::default()
    }
}

/// The address a browser on this machine reaches the server at: a wildcard listen
/// address (`0.0.0.0`, `[::]`) becomes the loopback one.
fn browser_addr(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port())
}

/// A 12-hour operator token to print, when there is a token signing key.
fn operator_token(variables: &BTreeMap<String, String>) -> anyhow::Result<Option<String>> {
    let secret = variables
        .get("token_signing_key")
        .cloned()
        .or_else(|| std::env::var("SPIN_VARIABLE_TOKEN_SIGNING_KEY").ok());
    Ok(match secret {
        Some(secret) => {
            let signer = TokenSigner::from_secret(&secret).context("the token signing key")?;
            Some(signer.mint(
                &AccessClaims::operator("toaster-up"),
                Duration::from_secs(12 * 3600),
            )?)
        }
        None => None,
    })
}

/// Sets `db_host` to `db_url`'s host and port when the app declares both and
/// `db_host` was not given: the only database the components may reach is db_url's.
fn derive_db_host(
    manifest: &Manifest,
    variables: &mut BTreeMap<String, String>,
    origin: &mut BTreeMap<String, String>,
) {
    let given = |name: &str| {
        variables.contains_key(name)
            || std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())).is_ok()
    };
    if !manifest.variables.contains_key("db_host") || given("db_host") {
        return;
    }
    let url = variables
        .get("db_url")
        .cloned()
        .or_else(|| std::env::var("SPIN_VARIABLE_DB_URL").ok());
    if let Some(host) = url.as_deref().and_then(toaster_host::variables::db_host_of) {
        variables.insert("db_host".into(), host);
        origin.insert("db_host".to_owned(), "db_url".to_owned());
    }
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

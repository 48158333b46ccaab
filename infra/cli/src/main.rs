//! `toaster`: run the app (`up`), apply migrations (`migrate`), mint tokens (`token`), back up
//! and restore the database (`backup`, `restore`), and its daily maintenance (`retention`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use toaster_bench::bench;
use toaster_cli::build;
use toaster_core::token::{AccessClaims, TokenSigner};
use toaster_host::runtime_config::RuntimeConfig;
use toaster_host::{HostConfig, Limits, Runtime, manifest::Manifest};
use toaster_setup::{database, keys, localpg, migrate};

mod admin;

// A request allocates and frees many small objects (store, resource table,
// headers); mimalloc does that measurably faster than glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "toaster",
    version,
    about = "Toaster: an IoT backend of WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build what is missing, start PostgreSQL if none is configured, migrate, and serve.
    Up(UpArgs),
    /// Apply schemas/sql/*.sql to a database, each once.
    Migrate {
        /// The database to migrate, postgres://USER:PASSWORD@HOST:PORT/DATABASE.
        #[arg(long, env = "TOASTER_DATABASE_URL")]
        database_url: String,
        /// The directory of numbered .sql migrations.
        #[arg(long, default_value = "schemas/sql")]
        dir: PathBuf,
    },
    /// Run the benchmarks, each against a native baseline in the same run (use a release build).
    Bench(bench::BenchArgs),
    /// Serve one benchmark target until stdin closes (started by `toaster bench`).
    #[command(hide = true)]
    BenchServe,
    /// Print an access token signed with the token signing key.
    Token {
        /// Who the token is for: an operator (every tenant), or a tenant's admin.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The tenant an admin token is for.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime, e.g. 15m, 12h, 30d.
        #[arg(long, default_value = "12h", value_parser = toaster_setup::duration::parse)]
        ttl: Duration,
        /// File holding the signing key; default: SPIN_VARIABLE_TOKEN_SIGNING_KEY, then .toaster/token_signing_key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Write a backup of the database (pg_dump, custom format) to a file.
    Backup {
        /// The database to back up, postgres://USER:PASSWORD@HOST:PORT/DATABASE.
        #[arg(long, env = "TOASTER_DATABASE_URL")]
        database_url: String,
        /// The backup file; written whole or not at all.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty database (pg_restore, one transaction).
    Restore {
        /// The empty database to restore into, postgres://USER:PASSWORD@HOST:PORT/DATABASE.
        #[arg(long, env = "TOASTER_DATABASE_URL")]
        database_url: String,
        /// Drop and recreate what the backup contains even if the database is not empty.
        #[arg(long)]
        clean: bool,
        /// A file written by `toaster backup` (or `pg_dump -Fc`).
        file: PathBuf,
    },
    /// Simulate a fleet of devices against a running Toaster (load on this machine only).
    Simulate(toaster_bench::simulate::SimulateArgs),
    /// Create telemetry partitions ahead and remove data past each tenant's retention.
    Retention {
        /// The app's database, postgres://USER:PASSWORD@HOST:PORT/DATABASE.
        #[arg(long, env = "TOASTER_DATABASE_URL")]
        database_url: String,
        /// Apply only this tenant's row retention (partitions past everyone's go anyway).
        #[arg(long)]
        tenant: Option<String>,
        /// How long to wait for a lock on telemetry before giving up until the next run.
        #[arg(long, default_value = "30s", value_parser = toaster_setup::duration::parse)]
        lock_timeout: Duration,
    },
    /// The admin commands: clients of the HTTP API (docs/cli.md).
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Operator,
    Admin,
}

#[derive(clap::Args)]
struct UpArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The benchmark's host (a `bench-serve` child) would otherwise spend its time
    // writing access logs.
    let default_level = if matches!(cli.command, Command::Bench(_) | Command::BenchServe) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: redirected to a file or a log collector
        // they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The admin commands have exit codes of their own (docs/cli.md).
    let command = match cli.command {
        Command::Admin(command) => return rt.block_on(admin::run(command)),
        command => command,
    };
    let result = rt.block_on(async {
        match command {
            Command::Up(args) => up(args).await,
            Command::Migrate { database_url, dir } => migrate_cmd(&database_url, &dir).await,
            Command::Bench(args) => bench::command(args).await,
            Command::BenchServe => bench::server::serve().await,
            Command::Token {
                role,
                tenant,
                ttl,
                key_file,
            } => token_cmd(role, tenant, ttl, key_file),
            Command::Backup { database_url, out } => {
                let report = toaster_cli::backup::backup(&database_url, &out).await?;
                println!("{report}");
                Ok(())
            }
            Command::Restore {
                database_url,
                clean,
                file,
            } => {
                let options = toaster_cli::backup::RestoreOptions { clean };
                let report = toaster_cli::backup::restore(&database_url, &file, options).await?;
                println!("{report}");
                Ok(())
            }
            Command::Simulate(args) => toaster_bench::simulate::run(args).await,
            Command::Retention {
                database_url,
                tenant,
                lock_timeout,
            } => {
                let client = database::connect(&database_url).await?;
                let report =
                    toaster_cli::retention::run(&client, tenant.as_deref(), lock_timeout).await?;
                println!("{report}");
                Ok(())
            }
            Command::Admin(_) => unreachable!("the admin commands return above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", toaster_cli::error_message(&e));
            ExitCode::FAILURE
        }
    }
}

async fn migrate_cmd(url: &str, dir: &Path) -> anyhow::Result<()> {
    let mut client = database::connect(url).await?;
    let report = migrate::migrate(&mut client, dir).await?;
    for name in &report.applied {
        println!("applied {name}");
    }
    println!(
        "{} migration(s) applied, {} already in place",
        report.applied.len(),
        report.already
    );
    Ok(())
}

fn token_cmd(
    role: RoleArg,
    tenant: Option<String>,
    ttl: Duration,
    key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let secret = match (key_file, std::env::var("SPIN_VARIABLE_TOKEN_SIGNING_KEY")) {
        (Some(f), _) => {
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, Ok(v)) => v,
        (None, Err(_)) => {
            let f = Path::new(".toaster/token_signing_key");
            std::fs::read_to_string(f).with_context(|| {
                "no signing key: pass --key-file, set SPIN_VARIABLE_TOKEN_SIGNING_KEY, or run `toaster up` once in this directory"
            })?
        }
    };
    let signer =
        TokenSigner::from_secret(secret.trim_end_matches('\n')).context("the token signing key")?;
    let claims = match role {
        RoleArg::Operator => {
            if tenant.is_some() {
                bail!("operator tokens are not bound to a tenant: drop --tenant");
            }
            AccessClaims::operator("cli")
        }
        RoleArg::Admin => {
            let Some(t) = tenant else {
                bail!("an admin token needs --tenant ID");
            };
            let t = toaster_core::ids::TenantId::parse(&t)
                .map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            AccessClaims::admin(t, "cli")
        }
    };
    println!("{}", signer.mint(&claims, ttl)?);
    Ok(())
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

async fn up(args: UpArgs) -> anyhow::Result<()> {
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

    // Every variable is checked before anything is built or started: unknown names,
    // missing values and values the components could not use stop us here.
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
        derive_db_host(&manifest, &mut variables, &mut origin);
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
        &manifest,
        &variables,
        &origin,
        |k| std::env::var(k).ok(),
        &supplied,
    )?;
    if args.check {
        println!(
            "{}: the manifest and its variables are fine",
            args.manifest.display()
        );
        return Ok(());
    }

    let missing = build::missing(&manifest);
    if args.build {
        build::build(&manifest, &[])?;
    } else if !missing.is_empty() {
        eprintln!(
            "component(s) {} not built yet: building",
            missing.join(", ")
        );
        build::build(&manifest, &missing)?;
    }

    let mut local_pg = None;
    if declared("db_url") && start_local_pg {
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
        variables.insert("db_url".into(), pg.url("toaster"));
        local_pg = Some(pg);
        derive_db_host(&manifest, &mut variables, &mut origin);
    }

    // Migrations, when the app has them and a database is configured.
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

    let limits = Limits {
        request_timeout: Duration::from_secs(args.request_timeout),
        max_concurrent_requests: args.max_concurrent,
        max_body_bytes: args.max_body_bytes,
        header_timeout: args.header_timeout,
        queue_timeout: args.queue_timeout,
        max_connections: args.max_connections,
        max_connections_per_client: args.max_connections_per_client,
        ..Limits::default()
    };
    let runtime = Runtime::new(&limits, Some(state_dir.join("cache")))?;
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
            limits,
        },
        &runtime_config,
    )
    .await?;

    // Everything that can fail is done before we say we serve.
    let secret = variables
        .get("token_signing_key")
        .cloned()
        .or_else(|| std::env::var("SPIN_VARIABLE_TOKEN_SIGNING_KEY").ok());
    let token = match secret {
        Some(secret) => {
            let signer = TokenSigner::from_secret(&secret).context("the token signing key")?;
            Some(signer.mint(
                &AccessClaims::operator("toaster-up"),
                Duration::from_secs(12 * 3600),
            )?)
        }
        None => None,
    };
    println!(
        "Toaster is serving {} on {scheme}://{}",
        manifest.name,
        host.addr()
    );
    println!("  health: curl -s {scheme}://{}/healthz", host.addr());
    if let Some(token) = token {
        println!("  operator token (12 h): {token}");
    }

    wait_for_shutdown().await;
    eprintln!("shutting down");
    host.shutdown().await?;
    if let Some(pg) = local_pg {
        pg.stop().await?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_says_what_it_is_for() {
        // Named flags (`--x`); positional arguments name themselves in the usage line.
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                let flag = arg.get_long().is_some() || arg.get_short().is_some();
                if !flag || matches!(id, "help" | "version") || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if !sub.is_hide_set() {
                    walk(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "toaster", &mut missing);
        assert!(missing.is_empty(), "flags without a help text: {missing:?}");
    }
}

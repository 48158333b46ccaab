//! `toaster`: run the app (`up`), apply migrations (`migrate`), mint tokens (`token`), back up
//! and restore the database (`backup`, `restore`), and its daily maintenance (`retention`).

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use toaster_bench::bench;
use toaster_core::token::{AccessClaims, TokenSigner};
use toaster_setup::{database, migrate};

mod admin;
mod up;

use up::{UpArgs, up};

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
        /// How long finished commands (succeeded, failed, rejected, expired, canceled)
        /// are kept.
        #[arg(long, env = "TOASTER_COMMAND_RETENTION", default_value = "30d",
              value_parser = toaster_setup::duration::parse)]
        command_retention: Duration,
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
                command_retention,
            } => {
                let client = database::connect(&database_url).await?;
                let report = toaster_cli::retention::run(
                    &client,
                    tenant.as_deref(),
                    lock_timeout,
                    command_retention,
                )
                .await?;
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

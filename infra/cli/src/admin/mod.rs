//! The admin commands: a client of the public HTTP API, in the manner of `aws iot`.
//!
//! ```text
//! toaster login --server URL --token TOKEN      save both (config file, mode 0600)
//! toaster whoami | logout [--revoke]
//! toaster tenants   list | get ID | create --name N [--id ID]
//! toaster tokens    list | create --tenant ID --subject S | revoke ID | revoke --stdin
//! toaster devices   list | get ID | create ID … | update ID … | delete ID [--erase]
//! toaster claims    list | get ID | create … | delete ID
//! toaster firmware  list | get ID | create …
//! toaster rollouts  list | get ID | create … | advance|pause|resume|abort ID
//! toaster telemetry latest | series | raw | fleet | retention get|set|run
//! toaster audit     list
//! ```
//!
//! Every command takes `--server`, `--token` (or `TOASTER_SERVER`, `TOASTER_TOKEN`, or
//! the file `toaster login` writes: [`config`]) and `--output table|json`
//! ([`output`]). Exit codes ([`client::CliError`]): 0 done; 1 the API refused (4xx,
//! its problem shown: title, detail, each field's pointer); 2 usage or local
//! configuration (clap's own errors are 2 too); 3 the server is unreachable, answered
//! 5xx, or is not a Toaster server. The token is never printed.
//!
//! Self-contained: it uses nothing of the host's runtime, only the HTTP API, so it can
//! move to a crate of its own. Documented in docs/cli.md.

mod client;
mod config;
mod devices;
mod ota;
mod output;
mod session;
mod telemetry;
mod tenants;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use client::{CliError, Client};
use output::{Column, Format};

/// The admin commands, flattened into `toaster`'s own.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Check a token against a server and save both for the other commands
    /// (`$XDG_CONFIG_HOME/toaster/config.toml`, mode 0600).
    Login(session::LoginArgs),
    /// Forget the saved server and token (`--revoke`: revoke the token first).
    Logout(session::LogoutArgs),
    /// Who the token says you are.
    Whoami(Global),
    /// Tenants (operator).
    Tenants(tenants::TenantsCmd),
    /// Operator and admin access tokens: mint, list, revoke.
    Tokens(tenants::TokensCmd),
    /// The tenant's device registry (admin).
    Devices(devices::DevicesCmd),
    /// Claim tokens for zero-touch provisioning (admin).
    Claims(devices::ClaimsCmd),
    /// Firmware releases (admin).
    Firmware(ota::FirmwareCmd),
    /// Staged firmware rollouts (admin).
    Rollouts(ota::RolloutsCmd),
    /// Telemetry: latest values, series, raw readings, fleet series, retention.
    Telemetry(telemetry::TelemetryCmd),
    /// The tenant's audit log (admin).
    Audit(AuditCmd),
}

/// Where and how: accepted by every admin command, before or after its subcommand.
#[derive(Args, Clone, Debug, Default)]
pub struct Global {
    /// The API's base URL [default: the saved one, else http://127.0.0.1:3000].
    #[arg(long, global = true, env = "TOASTER_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token [default: the saved one]. Prefer TOASTER_TOKEN or `toaster
    /// login`: a flag shows in the process list.
    #[arg(
        long,
        global = true,
        env = "TOASTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// `table` for people, `json` (the API's JSON) for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Runs one admin command; the exit code is the contract scripts rely on.
pub async fn run(command: AdminCommand) -> ExitCode {
    match dispatch(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", error.render());
            ExitCode::from(error.exit_code())
        }
    }
}

async fn dispatch(command: AdminCommand) -> Result<(), CliError> {
    match command {
        AdminCommand::Login(args) => session::login(args).await,
        AdminCommand::Logout(args) => session::logout(args).await,
        AdminCommand::Whoami(global) => session::whoami(&Ctx::new(&global)?).await,
        AdminCommand::Tenants(cmd) => tenants::tenants(cmd).await,
        AdminCommand::Tokens(cmd) => tenants::tokens(cmd).await,
        AdminCommand::Devices(cmd) => devices::devices(cmd).await,
        AdminCommand::Claims(cmd) => devices::claims(cmd).await,
        AdminCommand::Firmware(cmd) => ota::firmware(cmd).await,
        AdminCommand::Rollouts(cmd) => ota::rollouts(cmd).await,
        AdminCommand::Telemetry(cmd) => telemetry::telemetry(cmd).await,
        AdminCommand::Audit(cmd) => audit(cmd).await,
    }
}

/// A command's client and output format.
pub struct Ctx {
    pub client: Client,
    pub format: Format,
}

impl Ctx {
    /// From the flags, the environment and the config file ([`config`]).
    pub fn new(global: &Global) -> Result<Ctx, CliError> {
        let saved = config::load(&config::path()?)?;
        let server = config::server(global.server.as_deref(), saved.as_ref())?;
        let token = config::token(global.token.as_deref(), saved.as_ref())?;
        Ok(Ctx {
            client: Client::new(server, token)?,
            format: global.output,
        })
    }

    /// Prints one object: as JSON, or as `KEY  VALUE` lines.
    pub fn show(&self, value: &Value) {
        match self.format {
            Format::Json => print(&output::json(value)),
            Format::Table => print(&output::record(value)),
        }
    }

    /// Prints a confirmation for people; nothing for scripts (the API sent no body).
    pub fn done(&self, message: &str) {
        if self.format == Format::Table {
            print(&format!("{message}\n"));
        }
    }

    /// `GET` one object and show it.
    pub async fn get_one(&self, segments: &[&str]) -> Result<(), CliError> {
        let value = self.client.get(segments, &[]).await?;
        self.show(&value);
        Ok(())
    }

    /// A request with a JSON body whose answer (an object) is shown.
    pub async fn send_and_show(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: &Value,
    ) -> Result<(), CliError> {
        match self.client.send(method, segments, &[], Some(body)).await? {
            Some(value) => self.show(&value),
            None => self.done("done"),
        }
        Ok(())
    }

    /// One page of a list (or every page with `--all`), as a table or the API's JSON.
    pub async fn list(
        &self,
        segments: &[&str],
        mut query: Vec<(&str, String)>,
        page: &Page,
        columns: &[Column],
    ) -> Result<(), CliError> {
        if let Some(limit) = page.limit {
            query.push(("limit", limit.to_string()));
        }
        let mut cursor = page.cursor.clone();
        let mut items = Vec::new();
        loop {
            let mut this = query.clone();
            if let Some(cursor) = &cursor {
                this.push(("cursor", cursor.clone()));
            }
            let answer = self.client.get(segments, &this).await?;
            let next = answer["next_cursor"].as_str().map(str::to_owned);
            if !page.all {
                return self.show_page(&answer, columns, next.as_deref());
            }
            items.extend(answer["items"].as_array().cloned().unwrap_or_default());
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        self.show_page(&json!({"items": items, "next_cursor": null}), columns, None)
    }

    fn show_page(
        &self,
        answer: &Value,
        columns: &[Column],
        next: Option<&str>,
    ) -> Result<(), CliError> {
        match self.format {
            Format::Json => print(&output::json(answer)),
            Format::Table => {
                let items = answer["items"].as_array().cloned().unwrap_or_default();
                print(&output::table(&items, columns));
                if let Some(next) = next {
                    eprintln!("(more: --cursor {next}, or --all)");
                }
            }
        }
        Ok(())
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly.
fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Paging flags of every list.
#[derive(Args, Clone, Debug, Default)]
pub struct Page {
    /// Items per page (the API's default is 50, at most 500).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Start after this `next_cursor` of a previous page.
    #[arg(long, conflicts_with = "all")]
    pub cursor: Option<String>,
    /// Fetch every page.
    #[arg(long)]
    pub all: bool,
}

/// `15m`, `12h`, `7d`, `90s` (or `90`): a lifetime or an age on the command line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 90s, 15m, 12h, 7d"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Args)]
pub struct AuditCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: AuditAction,
}

#[derive(Subcommand)]
enum AuditAction {
    /// The tenant's audit log, newest first.
    List {
        #[command(flatten)]
        page: Page,
    },
}

const AUDIT_COLUMNS: &[Column] = &[
    output::col("ID", "/id"),
    output::col("AT", "/at"),
    output::col("ROLE", "/actor/role"),
    output::col("ACTOR", "/actor/name"),
    output::col("ACTION", "/action"),
    output::col("TARGET", "/target"),
    output::col("DETAILS", "/details"),
];

async fn audit(cmd: AuditCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        AuditAction::List { page } => {
            ctx.list(&["v1", "audit"], Vec::new(), &page, AUDIT_COLUMNS)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks its definitions only when a command is parsed: check them all.
    #[test]
    fn every_command_is_well_formed() {
        let command = AdminCommand::augment_subcommands(clap::Command::new("toaster"));
        command.debug_assert();
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "h", "1w", "1.5h", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

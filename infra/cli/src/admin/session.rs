//! `toaster login`, `logout` and `whoami`: the saved server and token.
//!
//! `login` checks the token against the server (`GET /v1/auth/me`) before saving
//! anything, so a typo is found at once (exit 1) rather than by the next command.
//! The token comes from `--token`, `TOASTER_TOKEN`, or standard input (read without
//! echo on a terminal), and is never printed.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{CliError, Client, one_line};
use super::output::Format;
use super::{Ctx, Global, config, print};

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    global: Global,
}

#[derive(Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    global: Global,
    /// Revoke the saved token on the server first (`POST /v1/auth/revoke`).
    #[arg(long)]
    revoke: bool,
}

/// `toaster login --server URL [--token TOKEN]`
pub async fn login(args: LoginArgs) -> Result<(), CliError> {
    let path = config::path()?;
    // A broken file is about to be replaced: only its server is of use.
    let saved = config::load(&path).ok().flatten();
    let server = config::server(args.global.server.as_deref(), saved.as_ref())?;
    let token = match args.global.token.as_deref() {
        Some(token) => config::token(Some(token), None)?,
        None => read_token()?,
    };
    let client = Client::new(server.clone(), token.clone())?;
    let me = client.get(&["v1", "auth", "me"], &[]).await?;
    config::save(
        &path,
        &config::ConfigFile {
            server: Some(server.to_string()),
            token: Some(token),
        },
    )?;
    match args.global.output {
        Format::Json => print(&super::output::json(&json!({
            "server": server.as_str(), "config": path.display().to_string(), "caller": me,
        }))),
        Format::Table => print(&format!(
            "Logged in to {server} as {}.\nSaved to {} (mode 0600).\n",
            describe(&me),
            path.display()
        )),
    }
    Ok(())
}

/// `admin alice@acme.example of tenant acme (token tok_…, expires …)`
fn describe(me: &Value) -> String {
    let text = |key: &str| me[key].as_str().map(one_line).unwrap_or_else(|| "-".into());
    let tenant = match me["tenant_id"].as_str() {
        Some(tenant) => format!(" of tenant {}", one_line(tenant)),
        None => String::new(),
    };
    format!(
        "{} {}{tenant} (token {}, expires {})",
        text("role"),
        text("subject"),
        text("token_id"),
        text("expires_at")
    )
}

/// One line from standard input; on a terminal, asked for and read without echo.
fn read_token() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        eprint!("Token (input hidden): ");
        let _ = std::io::stderr().flush();
        let line = without_echo(|| read_line(&stdin));
        eprintln!();
        line?
    } else {
        read_line(&stdin)?
    };
    config::token(Some(&line), None).map_err(|_| {
        CliError::usage("no token: pass --token, set TOASTER_TOKEN, or give it on standard input")
    })
}

fn read_line(stdin: &std::io::Stdin) -> Result<String, CliError> {
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::usage(format!("cannot read the token from standard input: {e}")))?;
    Ok(line)
}

/// Runs `read` with the terminal's echo off, restoring it afterwards.
fn without_echo<T>(read: impl FnOnce() -> T) -> T {
    // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own; the saved settings
    // are restored before returning.
    unsafe {
        let mut saved: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
            return read();
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
        let result = read();
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved);
        result
    }
}

/// `toaster logout [--revoke]`
pub async fn logout(args: LogoutArgs) -> Result<(), CliError> {
    let path = config::path()?;
    if args.revoke {
        let saved = config::load(&path)?;
        let server = config::server(args.global.server.as_deref(), saved.as_ref())?;
        let token = config::token(args.global.token.as_deref(), saved.as_ref())?;
        let client = Client::new(server, token.clone())?;
        client
            .send(
                Method::POST,
                &["v1", "auth", "revoke"],
                &[],
                Some(&json!({"token": token})),
            )
            .await?;
    }
    let removed = config::remove(&path)?;
    if args.global.output == Format::Table {
        let revoked = if args.revoke { "Token revoked. " } else { "" };
        if removed {
            print(&format!(
                "{revoked}Logged out: removed {}.\n",
                path.display()
            ));
        } else {
            print(&format!("{revoked}Not logged in: no {}.\n", path.display()));
        }
    }
    Ok(())
}

/// `toaster whoami`
pub async fn whoami(ctx: &Ctx) -> Result<(), CliError> {
    let me = ctx.client.get(&["v1", "auth", "me"], &[]).await?;
    match ctx.format {
        Format::Json => ctx.show(&me),
        Format::Table => print(&format!("{} at {}\n", describe(&me), ctx.client.base())),
    }
    Ok(())
}

//! `toaster tenants …` and `toaster tokens …` (operators; admins list and revoke
//! their tenant's tokens).

use std::io::Read;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::client::CliError;
use super::output::{Column, col};
use super::{Ctx, Global, Page, parse_duration};

#[derive(Args)]
pub struct TenantsCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: TenantsAction,
}

#[derive(Subcommand)]
enum TenantsAction {
    /// Every tenant, by id.
    List {
        #[command(flatten)]
        page: Page,
    },
    /// One tenant.
    Get { id: String },
    /// A new tenant.
    Create {
        /// Its display name.
        #[arg(long)]
        name: String,
        /// Its id (lowercase letters, digits, `-`); generated when left out.
        #[arg(long)]
        id: Option<String>,
    },
}

const TENANT_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("NAME", "/name"),
    col("CREATED", "/created_at"),
];

pub async fn tenants(cmd: TenantsCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        TenantsAction::List { page } => {
            ctx.list(&["v1", "tenants"], Vec::new(), &page, TENANT_COLUMNS)
                .await
        }
        TenantsAction::Get { id } => ctx.get_one(&["v1", "tenants", &id]).await,
        TenantsAction::Create { name, id } => {
            let mut body = json!({"name": name});
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            ctx.send_and_show(Method::POST, &["v1", "tenants"], &body)
                .await
        }
    }
}

#[derive(Args)]
pub struct TokensCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: TokensAction,
}

#[derive(Subcommand)]
enum TokensAction {
    /// Recorded tokens, newest first: an operator sees all, an admin its tenant's.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only `operator` or `admin` tokens.
        #[arg(long)]
        role: Option<String>,
        /// Expired ones too (kept a day after expiry).
        #[arg(long)]
        include_expired: bool,
        #[command(flatten)]
        page: Page,
    },
    /// Mint an admin token for a tenant (operator). Prints the token once.
    Create {
        /// The tenant the admin token is for.
        #[arg(long)]
        tenant: String,
        /// Who it is for (a person or a system), shown in the audit log.
        #[arg(long)]
        subject: String,
        /// Lifetime, 1m to 30d [API default: 1h].
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Revoke a token: by id, or (--stdin) by presenting the token itself, for tokens
    /// minted outside the API (`toaster token`, the one `toaster up` prints).
    Revoke {
        /// The token's id (`tok_…`, see `tokens list` or `whoami`).
        #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
        id: Option<String>,
        /// Read the token to revoke from standard input.
        #[arg(long)]
        stdin: bool,
    },
}

const TOKEN_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("ROLE", "/role"),
    col("TENANT", "/tenant_id"),
    col("SUBJECT", "/subject"),
    col("EXPIRES", "/expires_at"),
    col("CREATED", "/created_at"),
    col("REVOKED", "/revoked_at"),
];

pub async fn tokens(cmd: TokensCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        TokensAction::List {
            tenant,
            role,
            include_expired,
            page,
        } => {
            let mut query = Vec::new();
            if let Some(tenant) = tenant {
                query.push(("tenant", tenant));
            }
            if let Some(role) = role {
                query.push(("role", role));
            }
            if include_expired {
                query.push(("include_expired", "true".to_owned()));
            }
            ctx.list(&["v1", "auth", "tokens"], query, &page, TOKEN_COLUMNS)
                .await
        }
        TokensAction::Create {
            tenant,
            subject,
            ttl,
        } => {
            let mut body = json!({"subject": subject});
            if let Some(ttl) = ttl {
                body["ttl_secs"] = json!(ttl.as_secs());
            }
            ctx.send_and_show(Method::POST, &["v1", "tenants", &tenant, "tokens"], &body)
                .await
        }
        TokensAction::Revoke { id: Some(id), .. } => {
            ctx.client
                .send(Method::DELETE, &["v1", "auth", "tokens", &id], &[], None)
                .await?;
            ctx.done(&format!("Revoked token {id}."));
            Ok(())
        }
        TokensAction::Revoke { id: None, .. } => {
            let token = token_from_stdin()?;
            ctx.client
                .send(
                    Method::POST,
                    &["v1", "auth", "revoke"],
                    &[],
                    Some(&json!({"token": token})),
                )
                .await?;
            ctx.done("Revoked the token read from standard input.");
            Ok(())
        }
    }
}

fn token_from_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| CliError::usage(format!("cannot read standard input: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::usage("no token on standard input"));
    }
    Ok(token.to_owned())
}

//! `toaster devices …` and `toaster claims …` (admin of a tenant).

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::CliError;
use super::output::{Column, col};
use super::{Ctx, Global, Page, parse_duration};

#[derive(Args)]
pub struct DevicesCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: DevicesAction,
}

#[derive(Subcommand)]
enum DevicesAction {
    /// The tenant's devices, by id, filtered.
    List {
        /// Devices of this model.
        #[arg(long)]
        model: Option<String>,
        /// Devices on this update channel.
        #[arg(long)]
        channel: Option<String>,
        /// Devices carrying this tag.
        #[arg(long)]
        tag: Option<String>,
        /// active, disabled or decommissioned.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// One device, its keys and last-known values.
    Get { id: String },
    /// Register a device with its public key (no claim needed).
    Create {
        id: String,
        /// The device's model, e.g. t1000.
        #[arg(long)]
        model: String,
        /// Its update channel [API default: stable]
        #[arg(long)]
        channel: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The device's public key, a PEM file (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
    /// Enable or disable, rotate its key, change its channel or tags.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)
        .args(["status", "channel", "tags", "clear_tags", "public_key", "complete_rotation"])))]
    Update {
        id: String,
        /// active or disabled (disabling revokes its tokens).
        #[arg(long)]
        status: Option<String>,
        /// Move it to this update channel.
        #[arg(long)]
        channel: Option<String>,
        /// Replace its tags with these (repeatable).
        #[arg(long = "tag", conflicts_with = "clear_tags")]
        tags: Vec<String>,
        /// Remove every tag.
        #[arg(long)]
        clear_tags: bool,
        /// Start a key rotation with this PEM public key (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Complete the key rotation now (revokes the old key's tokens).
        #[arg(long)]
        complete_rotation: bool,
    },
    /// Decommission a device (the id is never reused).
    Delete {
        id: String,
        /// Also erase its telemetry and cached state.
        #[arg(long)]
        erase: bool,
    },
}

const DEVICE_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("MODEL", "/model"),
    col("CHANNEL", "/channel"),
    col("STATUS", "/status"),
    col("GEN", "/key_generation"),
    col("TAGS", "/tags"),
    col("CREATED", "/created_at"),
];

pub async fn devices(cmd: DevicesCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        DevicesAction::List {
            model,
            channel,
            tag,
            status,
            page,
        } => {
            let query = [
                ("model", model),
                ("channel", channel),
                ("tag", tag),
                ("status", status),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            ctx.list(&["v1", "devices"], query, &page, DEVICE_COLUMNS)
                .await
        }
        DevicesAction::Get { id } => ctx.get_one(&["v1", "devices", &id]).await,
        DevicesAction::Create {
            id,
            model,
            channel,
            tags,
            public_key,
        } => {
            let mut body = json!({
                "id": id, "model": model, "tags": tags, "public_key": read_pem(&public_key)?,
            });
            if let Some(channel) = channel {
                body["channel"] = json!(channel);
            }
            ctx.send_and_show(Method::POST, &["v1", "devices"], &body)
                .await
        }
        DevicesAction::Update {
            id,
            status,
            channel,
            tags,
            clear_tags,
            public_key,
            complete_rotation,
        } => {
            let mut body = json!({});
            set(&mut body, "status", status);
            set(&mut body, "channel", channel);
            if !tags.is_empty() || clear_tags {
                body["tags"] = json!(tags);
            }
            if let Some(file) = public_key {
                body["public_key"] = json!(read_pem(&file)?);
            }
            if complete_rotation {
                body["complete_rotation"] = json!(true);
            }
            ctx.send_and_show(Method::PATCH, &["v1", "devices", &id], &body)
                .await
        }
        DevicesAction::Delete { id, erase } => {
            let query = if erase {
                vec![("erase", "true".to_owned())]
            } else {
                Vec::new()
            };
            ctx.client
                .send(Method::DELETE, &["v1", "devices", &id], &query, None)
                .await?;
            ctx.done(&format!("Decommissioned device {id}."));
            Ok(())
        }
    }
}

/// Sets `key` when a value was given: absent fields are left out, never `null`.
fn set(body: &mut Value, key: &str, value: Option<String>) {
    if let Some(value) = value {
        body[key] = json!(value);
    }
}

/// A PEM file's text (`-`: standard input), at most 16 KiB.
fn read_pem(path: &Path) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().take(16 * 1024).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(16 * 1024).read_to_string(&mut text))
    };
    read.map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(text)
}

#[derive(Args)]
pub struct ClaimsCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: ClaimsAction,
}

#[derive(Subcommand)]
enum ClaimsAction {
    /// The tenant's claims, newest first (never the token).
    List {
        /// active, used_up, expired or revoked.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// One claim.
    Get { id: String },
    /// A claim token for a batch of devices. Prints the token once.
    Create {
        /// The model the devices provisioned with it get.
        #[arg(long)]
        model: String,
        /// How many devices may provision with it.
        #[arg(long)]
        quota: u32,
        /// How long it is valid, e.g. 7d.
        #[arg(long, value_parser = parse_duration)]
        expires_in: std::time::Duration,
        /// [API default: stable]
        #[arg(long)]
        channel: Option<String>,
        /// A tag every device provisioned with it gets (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Revoke a claim: provisioning with it is refused from now on.
    #[command(alias = "revoke")]
    Delete { id: String },
}

const CLAIM_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("MODEL", "/model"),
    col("CHANNEL", "/channel"),
    col("STATUS", "/status"),
    col("USED", "/used"),
    col("QUOTA", "/quota"),
    col("EXPIRES", "/expires_at"),
    col("TAGS", "/tags"),
];

pub async fn claims(cmd: ClaimsCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        ClaimsAction::List { status, page } => {
            let query = status.map(|s| ("status", s)).into_iter().collect();
            ctx.list(&["v1", "claims"], query, &page, CLAIM_COLUMNS)
                .await
        }
        ClaimsAction::Get { id } => ctx.get_one(&["v1", "claims", &id]).await,
        ClaimsAction::Create {
            model,
            quota,
            expires_in,
            channel,
            tags,
        } => {
            let mut body = json!({
                "model": model, "quota": quota, "expires_in_secs": expires_in.as_secs(), "tags": tags,
            });
            set(&mut body, "channel", channel);
            ctx.send_and_show(Method::POST, &["v1", "claims"], &body)
                .await
        }
        ClaimsAction::Delete { id } => {
            ctx.client
                .send(Method::DELETE, &["v1", "claims", &id], &[], None)
                .await?;
            ctx.done(&format!("Revoked claim {id}."));
            Ok(())
        }
    }
}

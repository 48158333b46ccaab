//! `toaster firmware …` and `toaster rollouts …` (admin of a tenant).

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::client::CliError;
use super::output::{Column, col};
use super::{Ctx, Global, Page, parse_duration};

#[derive(Args)]
pub struct FirmwareCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: FirmwareAction,
}

#[derive(Subcommand)]
enum FirmwareAction {
    /// The tenant's firmware releases.
    List {
        /// Releases for this model.
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// One release.
    Get { id: String },
    /// A new release (immutable once created). Give the image with --file (its
    /// SHA-256 and size are computed here), or --sha256 and --size.
    #[command(group(ArgGroup::new("image").required(true).args(["file", "sha256"])))]
    Create {
        /// The device model it is for.
        #[arg(long)]
        model: String,
        /// SemVer, e.g. 1.4.0.
        #[arg(long)]
        version: String,
        /// Where devices download it (https, a public address).
        #[arg(long)]
        url: String,
        /// The image, to compute --sha256 and --size from.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["sha256", "size"])]
        file: Option<PathBuf>,
        /// Hex SHA-256 of the image.
        #[arg(long, requires = "size")]
        sha256: Option<String>,
        /// The image's size in bytes.
        #[arg(long, requires = "sha256")]
        size: Option<u64>,
        /// Release notes (at most 4,096 characters).
        #[arg(long)]
        notes: Option<String>,
    },
}

const FIRMWARE_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("MODEL", "/model"),
    col("VERSION", "/version"),
    col("SIZE", "/size"),
    col("CREATED", "/created_at"),
    col("URL", "/url"),
];

pub async fn firmware(cmd: FirmwareCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        FirmwareAction::List { model, page } => {
            let query = model.map(|m| ("model", m)).into_iter().collect();
            ctx.list(&["v1", "ota", "firmware"], query, &page, FIRMWARE_COLUMNS)
                .await
        }
        FirmwareAction::Get { id } => ctx.get_one(&["v1", "ota", "firmware", &id]).await,
        FirmwareAction::Create {
            model,
            version,
            url,
            file,
            sha256,
            size,
            notes,
        } => {
            let (sha256, size) = match (file, sha256, size) {
                (Some(file), _, _) => digest(&file)?,
                (None, Some(sha256), Some(size)) => (sha256, size),
                _ => return Err(CliError::usage("give --file, or --sha256 and --size")),
            };
            let mut body = json!({
                "model": model, "version": version, "url": url, "sha256": sha256, "size": size,
            });
            if let Some(notes) = notes {
                body["notes"] = json!(notes);
            }
            ctx.send_and_show(Method::POST, &["v1", "ota", "firmware"], &body)
                .await
        }
    }
}

/// The hex SHA-256 and the size of a file, read once.
fn digest(path: &Path) -> Result<(String, u64), CliError> {
    let fail = |e: std::io::Error| CliError::usage(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

#[derive(Args)]
pub struct RolloutsCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: RolloutsAction,
}

#[derive(Subcommand)]
enum RolloutsAction {
    /// The tenant's rollouts (without counts: `get` one for those).
    List {
        /// active, paused, halted or aborted.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// One rollout, its counts and failure rate.
    Get { id: String },
    /// Start a staged rollout of a firmware release.
    Create {
        /// The firmware's id (`fw_…`).
        #[arg(long)]
        firmware: String,
        /// The channel it goes to.
        #[arg(long)]
        channel: String,
        /// Which running versions it applies to, e.g. ">=1.2.0, <1.4.0" or "*".
        #[arg(long)]
        versions: String,
        /// A tag every device must carry (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Percentages, strictly increasing, e.g. 1,10,50,100 [API default].
        #[arg(long, value_delimiter = ',')]
        stages: Vec<u32>,
        /// Halts itself at this failure rate, e.g. 0.05 [API default].
        #[arg(long)]
        failure_threshold: Option<f64>,
        /// Outcomes needed before the failure rate counts [API default: 10].
        #[arg(long)]
        min_reports: Option<u32>,
        /// A device that reports nothing for this long has failed, e.g. 1h.
        #[arg(long, value_parser = parse_duration)]
        report_timeout: Option<std::time::Duration>,
    },
    /// Move to the next stage (when the current one is healthy).
    Advance { id: String },
    /// Pause an active rollout.
    Pause { id: String },
    /// Resume a paused rollout (a halted one cannot be).
    Resume { id: String },
    /// Abort a rollout (frees its model and channel for another).
    Abort { id: String },
}

const ROLLOUT_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("MODEL", "/model"),
    col("VERSION", "/version"),
    col("CHANNEL", "/selector/channel"),
    col("STATE", "/state"),
    col("STAGE%", "/stage_percent"),
    col("STAGES", "/stages"),
    col("UPDATED", "/updated_at"),
];

pub async fn rollouts(cmd: RolloutsCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        RolloutsAction::List { state, page } => {
            let query = state.map(|s| ("state", s)).into_iter().collect();
            ctx.list(&["v1", "ota", "rollouts"], query, &page, ROLLOUT_COLUMNS)
                .await
        }
        RolloutsAction::Get { id } => ctx.get_one(&["v1", "ota", "rollouts", &id]).await,
        RolloutsAction::Create {
            firmware,
            channel,
            versions,
            tags,
            stages,
            failure_threshold,
            min_reports,
            report_timeout,
        } => {
            let mut body = json!({
                "firmware_id": firmware,
                "selector": {"channel": channel, "versions": versions, "tags": tags},
            });
            if !stages.is_empty() {
                body["stages"] = json!(stages);
            }
            if let Some(threshold) = failure_threshold {
                body["failure_threshold"] = json!(threshold);
            }
            if let Some(min) = min_reports {
                body["min_reports"] = json!(min);
            }
            if let Some(timeout) = report_timeout {
                body["report_timeout_secs"] = json!(timeout.as_secs());
            }
            ctx.send_and_show(Method::POST, &["v1", "ota", "rollouts"], &body)
                .await
        }
        RolloutsAction::Advance { id } => act(&ctx, &id, "advance").await,
        RolloutsAction::Pause { id } => act(&ctx, &id, "pause").await,
        RolloutsAction::Resume { id } => act(&ctx, &id, "resume").await,
        RolloutsAction::Abort { id } => act(&ctx, &id, "abort").await,
    }
}

/// `POST /v1/ota/rollouts/{id}/{action}` (no body): the rollout after it.
async fn act(ctx: &Ctx, id: &str, action: &str) -> Result<(), CliError> {
    let segments = ["v1", "ota", "rollouts", id, action];
    match ctx.client.send(Method::POST, &segments, &[], None).await? {
        Some(rollout) => ctx.show(&rollout),
        None => ctx.done(&format!("Rollout {id}: {action} done.")),
    }
    Ok(())
}

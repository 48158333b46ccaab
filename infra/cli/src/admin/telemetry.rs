//! `toaster telemetry …`: what the aggregate component answers (admin; a device token
//! reads its own device).
//!
//! Times (`--from`, `--to`) are what the API takes, RFC 3339 or Unix milliseconds,
//! or an age: `15m`, `24h`, `7d` mean that long before now.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::CliError;
use super::output::{self, Column, Format, col};
use super::{Ctx, Global, Page, parse_duration, print};

#[derive(Args)]
pub struct TelemetryCmd {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    action: TelemetryAction,
}

/// The time range and bucketing of a series.
#[derive(Args)]
struct Bucketing {
    /// 1m, 5m, 15m, 1h, 6h or 1d.
    #[arg(long, default_value = "1h")]
    bucket: String,
    #[command(flatten)]
    range: TimeRange,
    /// Comma-separated: avg,min,max,sum,count,first,last [API default: avg,min,max,count].
    #[arg(long)]
    agg: Option<String>,
    /// `null`: list empty buckets too; `none` (the API's default): leave them out.
    #[arg(long)]
    fill: Option<String>,
}

#[derive(Args)]
struct TimeRange {
    /// Start: RFC 3339, Unix ms, or an age such as 24h.
    #[arg(long, default_value = "24h", value_parser = time_spec)]
    from: String,
    /// End (exclusive), as --from [API default: now].
    #[arg(long, value_parser = time_spec)]
    to: Option<String>,
}

impl TimeRange {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![("from", self.from.clone())];
        if let Some(to) = &self.to {
            query.push(("to", to.clone()));
        }
        query
    }
}

#[derive(Subcommand)]
enum TelemetryAction {
    /// A device's latest value of each metric, and when it was last seen.
    Latest { device: String },
    /// A device's metric in time buckets.
    Series {
        device: String,
        metric: String,
        #[command(flatten)]
        series: Bucketing,
    },
    /// A device's raw readings of a metric.
    Raw {
        device: String,
        metric: String,
        #[command(flatten)]
        range: TimeRange,
        #[command(flatten)]
        page: Page,
    },
    /// A metric across the tenant's devices in time buckets.
    Fleet {
        metric: String,
        #[command(flatten)]
        series: Bucketing,
        /// Only devices of this model.
        #[arg(long)]
        model: Option<String>,
        /// Only devices on this update channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only devices carrying this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// The tenant's retention policy: show, set or apply it.
    Retention {
        #[command(subcommand)]
        action: RetentionAction,
    },
}

#[derive(Subcommand)]
enum RetentionAction {
    /// The policy in force.
    Get,
    /// Replace the policy (days to keep raw readings, minute and hour rollups).
    Set {
        /// Days to keep raw readings.
        #[arg(long)]
        raw_days: u32,
        /// Days to keep minute rollups.
        #[arg(long)]
        minute_days: u32,
        /// Days to keep hour rollups.
        #[arg(long)]
        hour_days: u32,
    },
    /// Remove data past the policy now (an operator: every tenant's).
    Run,
}

pub async fn telemetry(cmd: TelemetryCmd) -> Result<(), CliError> {
    let ctx = Ctx::new(&cmd.global)?;
    match cmd.action {
        TelemetryAction::Latest { device } => latest(&ctx, &device).await,
        TelemetryAction::Series {
            device,
            metric,
            series,
        } => {
            let segments = ["v1", "metrics", "devices", &device, &metric];
            show_series(&ctx, &segments, series.query()).await
        }
        TelemetryAction::Raw {
            device,
            metric,
            range,
            page,
        } => {
            let segments = ["v1", "metrics", "devices", &device, &metric, "raw"];
            ctx.list(
                &segments,
                range.query(),
                &page,
                &[col("TS", "/ts"), col("VALUE", "/value")],
            )
            .await
        }
        TelemetryAction::Fleet {
            metric,
            series,
            model,
            channel,
            tag,
        } => {
            let mut query = series.query();
            for (key, value) in [("model", model), ("channel", channel), ("tag", tag)] {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            show_series(&ctx, &["v1", "metrics", "fleet", &metric], query).await
        }
        TelemetryAction::Retention { action } => retention(&ctx, action).await,
    }
}

impl Bucketing {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = self.range.query();
        query.push(("bucket", self.bucket.clone()));
        if let Some(agg) = &self.agg {
            query.push(("agg", agg.clone()));
        }
        if let Some(fill) = &self.fill {
            query.push(("fill", fill.clone()));
        }
        query
    }
}

/// A series: one row per bucket, one column per aggregate the answer holds.
async fn show_series(
    ctx: &Ctx,
    segments: &[&str],
    query: Vec<(&'static str, String)>,
) -> Result<(), CliError> {
    let answer = ctx.client.get(segments, &query).await?;
    if ctx.format == Format::Json {
        ctx.show(&answer);
        return Ok(());
    }
    let buckets = answer["buckets"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = answer["agg"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if buckets.iter().any(|b| b.get("devices").is_some()) {
        names.push("devices".to_owned());
    }
    // Rows of only the columns shown: the bucket's start and each aggregate.
    let rows: Vec<Value> = buckets
        .iter()
        .map(|b| {
            let mut row = json!({"start": b["start"]});
            for name in &names {
                row[name] = b[name].clone();
            }
            row
        })
        .collect();
    let columns: Vec<Column> = std::iter::once(col("START", "/start"))
        .chain(names.iter().filter_map(|n| agg_column(n)))
        .collect();
    print(&output::table(&rows, &columns));
    Ok(())
}

/// The column of an aggregate the API knows; `None` for a name it does not send.
fn agg_column(name: &str) -> Option<Column> {
    Some(match name {
        "avg" => col("AVG", "/avg"),
        "min" => col("MIN", "/min"),
        "max" => col("MAX", "/max"),
        "sum" => col("SUM", "/sum"),
        "count" => col("COUNT", "/count"),
        "first" => col("FIRST", "/first"),
        "last" => col("LAST", "/last"),
        "devices" => col("DEVICES", "/devices"),
        _ => return None,
    })
}

/// The latest values: when the device was last seen, then one row per metric.
async fn latest(ctx: &Ctx, device: &str) -> Result<(), CliError> {
    let answer = ctx
        .client
        .get(&["v1", "metrics", "devices", device, "latest"], &[])
        .await?;
    if ctx.format == Format::Json {
        ctx.show(&answer);
        return Ok(());
    }
    let rows: Vec<Value> = answer["metrics"]
        .as_object()
        .map(|metrics| {
            metrics
                .iter()
                .map(|(name, m)| json!({"metric": name, "ts": m["ts"], "value": m["value"]}))
                .collect()
        })
        .unwrap_or_default();
    print(&format!(
        "device {}, last seen {}\n",
        output::cell(&answer["device"]),
        output::cell(&answer["last_seen"])
    ));
    print(&output::table(
        &rows,
        &[
            col("METRIC", "/metric"),
            col("TS", "/ts"),
            col("VALUE", "/value"),
        ],
    ));
    Ok(())
}

async fn retention(ctx: &Ctx, action: RetentionAction) -> Result<(), CliError> {
    let segments = ["v1", "metrics", "retention"];
    match action {
        RetentionAction::Get => ctx.get_one(&segments).await,
        RetentionAction::Set {
            raw_days,
            minute_days,
            hour_days,
        } => {
            let body =
                json!({"raw_days": raw_days, "minute_days": minute_days, "hour_days": hour_days});
            ctx.send_and_show(Method::PUT, &segments, &body).await
        }
        RetentionAction::Run => {
            let run = ["v1", "metrics", "retention", "run"];
            match ctx.client.send(Method::POST, &run, &[], None).await? {
                Some(report) => ctx.show(&report),
                None => ctx.done("Retention applied."),
            }
            Ok(())
        }
    }
}

/// `--from`/`--to`: an age (`24h`: that long ago, as Unix ms) or the text as given
/// (RFC 3339 or Unix ms), which the API checks.
fn time_spec(text: &str) -> Result<String, String> {
    let is_age = text.len() > 1
        && text.ends_with(['s', 'm', 'h', 'd'])
        && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if !is_age {
        return Ok(text.to_owned());
    }
    let age = parse_duration(text)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_owned())?;
    let at = now
        .checked_sub(age)
        .ok_or_else(|| format!("{text} ago is before 1970"))?;
    Ok(at.as_millis().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_become_milliseconds_and_the_rest_passes_through() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let day_ago: i64 = time_spec("24h").unwrap().parse().unwrap();
        assert!((now_ms - 86_400_000 - day_ago).abs() < 5_000, "{day_ago}");
        assert_eq!(
            time_spec("2025-01-01T00:00:00Z").unwrap(),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(time_spec("1700000000000").unwrap(), "1700000000000");
        assert_eq!(time_spec("h").unwrap(), "h", "left for the API to refuse");
    }
}

//! How a run is written down: the machine, the command that reproduces it, the
//! tables' rows and notes, and the `<!-- bench:NAME -->` sections of BENCHMARKS.md.

use std::path::Path;

use anyhow::Context;

use super::host::peak;
use super::{BenchArgs, Measurement, usage};

/// The machine, for the record next to the figures.
pub fn machine() -> String {
    let cores = usage::cores();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // The first processor's fields: a model name such as "Intel(R) Xeon(R) Processor"
    // names a whole family of machines, so the family, model and clock go with it.
    let field = |name: &str| {
        cpuinfo
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut cpu = field("model name").unwrap_or_else(|| "?".into());
    if let (Some(family), Some(model)) = (field("cpu family"), field("model")) {
        cpu.push_str(&format!(", family {family} model {model}"));
    }
    if let Some(mhz) = field("cpu MHz").and_then(|m| m.parse::<f64>().ok()) {
        cpu.push_str(&format!(", {mhz:.0} MHz"));
    }
    format!("{cores} cores ({cpu}), {mem} memory")
}

/// The command that reproduces this run.
pub(crate) fn command_line(args: &BenchArgs, scenarios: &[String]) -> String {
    let mut command = format!(
        "cargo run --release -p toaster -- bench --duration {}s",
        args.duration.as_secs()
    );
    if !args.scenarios.is_empty() {
        for s in scenarios {
            command.push_str(&format!(" --scenario {s}"));
        }
    }
    if args.ingest_batches != [1, 10, 100, 1000] && scenarios.iter().any(|s| s == "ingest") {
        let b: Vec<String> = args.ingest_batches.iter().map(|b| b.to_string()).collect();
        command.push_str(&format!(" --ingest-batches {}", b.join(",")));
    }
    if args.ingest_connections != [16] && scenarios.iter().any(|s| s == "ingest") {
        let c: Vec<String> = args
            .ingest_connections
            .iter()
            .map(|c| c.to_string())
            .collect();
        command.push_str(&format!(" --ingest-connections {}", c.join(",")));
    }
    if let Some(spin) = &args.spin_bin
        && scenarios.iter().any(|s| s == "spin")
    {
        command.push_str(&format!(" --spin-bin {}", spin.display()));
        if let Some(redis) = &args.spin_redis {
            command.push_str(&format!(" --spin-redis {redis}"));
        }
    }
    if scenarios.iter().any(|s| s == "soak") {
        command.push_str(&format!(
            " --soak-rate {} --soak-duration {}s --soak-every {}s --soak-batch {}",
            args.soak_rate,
            args.soak_duration.as_secs(),
            args.soak_every.as_secs(),
            args.soak_batch
        ));
    }
    command
}

pub(crate) fn minutes(secs: f64) -> String {
    format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
}

pub(crate) fn run_summary(timings: &[(String, f64)], total: f64) -> String {
    let mut out = format!(
        "Whole run: **{}** ({total:.0} s) from start to the last figure, setup and data loading included; budget 15 minutes.\n\n| scenario | wall time |\n|---|---:|\n",
        minutes(total)
    );
    for (name, seconds) in timings {
        out.push_str(&format!("| {name} | {seconds:.0} s |\n"));
    }
    out
}

pub(crate) fn table_header() -> &'static str {
    "| | connections | native | toaster | ratio | native p50 | toaster p50 | native p99 | toaster p99 | native CPU % gen / server / other | toaster CPU % gen / server / other |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
}

pub(crate) fn row(label: &str, unit: f64, n: &Measurement, t: &Measurement) -> String {
    format!(
        "| {label} | {} | {:.0}/s | {:.0}/s | {:.2} | {} µs | {} µs | {} µs | {} µs | {} | {} |\n",
        n.connections,
        n.rps() * unit,
        t.rps() * unit,
        t.rps() / n.rps().max(f64::MIN_POSITIVE),
        n.p50_us,
        t.p50_us,
        n.p99_us,
        t.p99_us,
        n.cpu.cell(),
        t.cpu.cell(),
    )
}

pub(crate) fn errors_note(ms: &[&Measurement]) -> String {
    let errors: u64 = ms.iter().map(|m| m.errors).sum();
    if errors == 0 {
        String::new()
    } else {
        format!("\n{errors} request(s) failed during this scenario (see the log).\n")
    }
}

/// The line closing an app scenario: the host's peak memory during it.
pub(crate) fn host_peak_note(peak_bytes: Option<u64>) -> String {
    format!(
        "\nPeak memory (VmHWM) of the toaster host process during this scenario: {}.\n",
        peak(peak_bytes)
    )
}

/// Replaces (or appends) the `<!-- bench:NAME -->` sections of a markdown file.
pub fn write_sections(
    path: &Path,
    preamble: &str,
    sections: &[(String, String)],
) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    for (name, body) in sections {
        let (open, close) = (
            format!("<!-- bench:{name} -->"),
            format!("<!-- /bench:{name} -->"),
        );
        let content = format!("{open}\n{preamble}\n\n{body}{close}");
        text = match (text.find(&open), text.find(&close)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{content}{}", &text[..a], &text[b + close.len()..])
            }
            _ => format!("{text}\n{content}\n"),
        };
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

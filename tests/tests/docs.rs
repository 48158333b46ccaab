//! Docs that run as tests: every shell walk-through in README.md and docs/*.md runs
//! here against the real app (a fresh [`TestApp`]: our host, in-process, on a fresh
//! database), so a document that no longer works as written fails the suite.
//!
//! # The convention, for whoever writes a document
//!
//! - **Shell blocks run.** Every fenced block whose info string is `sh` (or `bash`)
//!   runs, in the order of the document, in one bash session per document under
//!   `set -euo pipefail`: variables, functions and files made by one block are there
//!   for the next. Each document gets its own fresh app and database, an empty working
//!   directory and an environment with nothing but `PATH`, `HOME`, the locale and the
//!   two variables below, so a document sets up everything it uses (its own tenant,
//!   devices, files). `toaster` is on the `PATH` (this build's binary), and
//!   `XDG_CONFIG_HOME` is the run's own, so `toaster login` writes nothing of yours.
//! - **Skipping a block** takes an HTML comment (invisible once rendered) on the line
//!   before it, saying why:
//!   `<!-- doc-test: skip — starts the server, which the test replaces -->`.
//! - **The server.** Documents reach Toaster through `$TOASTER` (its base URL) and act
//!   as the operator with `$OPERATOR`, set in a block the reader runs once:
//!   `TOASTER=${TOASTER:-http://127.0.0.1:3000}` and
//!   `OPERATOR=${OPERATOR:-$(cargo run -q -p toaster -- token --role operator)}`. The
//!   test exports both (the app's URL and an operator token), so those lines keep its
//!   values and mint nothing.
//! - **Shown answers are checked.** A fenced block with the info string `json expected`
//!   or `text expected`, as the next fenced block after a shell block (prose may come
//!   between), is compared with that shell block's standard output:
//!   - `json`: the output is one or more JSON values, compared in order with those of
//!     the block. `"…"` stands for any value and `"ro_…"` for any string of that shape
//!     (`…` matches any text); a member `"…": "…"` allows further members (otherwise an
//!     object must have exactly the members shown) and a last array element `"…"`
//!     further elements. Everything else must be equal (numbers as numbers).
//!   - `text`: line by line, trailing spaces ignored; `…` in a line matches any text,
//!     and a line that is only `…` any number of lines.
//!
//!   An answer written in a comment (`# → {...}`) would not be checked, so shell blocks
//!   may not have any: show it in an `expected` block.
//! - **Requests must succeed.** In the test, `curl` fails its block on an HTTP error
//!   status (as `--fail-with-body`, printing the body), unless the command prints the
//!   status itself with `-w`/`--write-out` (that is how a document shows a refusal) or
//!   says how to fail with `-f`/`--fail`.
//!
//! A failure names the document, the block's line and the command that failed, and
//! prints the block, its output and its errors. To see every block's output while
//! writing a document: `DOC_TEST_SHOW=1 cargo test -p toaster-tests --test docs -- --nocapture`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use toaster_tests::{TestApp, workspace_root};

/// How long one document's blocks may take together.
const DOC_TIMEOUT: Duration = Duration::from_secs(300);

/// The placeholder of `expected` blocks.
const ANY: &str = "…";

/// Documents with shell blocks that are not run, and why.
const NOT_RUN: &[(&str, &str)] = &[(
    "docs/fuzzing.md",
    "its blocks run scripts/fuzz and Schemathesis (Python packages, minutes per phase): \
     a tool run, not a walk-through against the app",
)];

macro_rules! doc_tests {
    ($($name:ident => $path:literal,)*) => {
        /// Every document run by a test below.
        const DOCS: &[&str] = &[$($path),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_document($path).await;
            }
        )*
    };
}

doc_tests! {
    readme => "README.md",
    identity => "docs/identity.md",
    ota => "docs/ota.md",
    control => "docs/control.md",
    console => "docs/console.md",
    aggregation => "docs/aggregation.md",
    simulate => "docs/simulate.md",
    cli => "docs/cli.md",
}

// ---------------------------------------------------------------------------------
// Reading a document

/// A fenced block as written.
#[derive(Debug, Clone)]
struct Fenced {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    body: String,
    /// The reason of a `<!-- doc-test: skip — reason -->` right before it.
    skip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpectKind {
    Json,
    Text,
}

#[derive(Debug, Clone)]
struct Expected {
    line: usize,
    kind: ExpectKind,
    body: String,
}

/// A shell block that runs, and the answer shown for it.
#[derive(Debug, Clone)]
struct Step {
    line: usize,
    body: String,
    expected: Option<Expected>,
}

#[derive(Debug, Default)]
struct Document {
    steps: Vec<Step>,
    /// Skipped shell blocks: line and reason.
    skipped: Vec<(usize, String)>,
}

fn is_shell(info: &str) -> bool {
    matches!(info.split_whitespace().next(), Some("sh" | "bash"))
}

fn expect_kind(info: &str) -> Option<ExpectKind> {
    let words: Vec<&str> = info.split_whitespace().collect();
    match words.as_slice() {
        ["json", "expected"] => Some(ExpectKind::Json),
        ["text", "expected"] => Some(ExpectKind::Text),
        _ => None,
    }
}

/// The reason of a `doc-test` marker line, or an error for a malformed one; `None`
/// for any other line.
fn marker(line: &str) -> Option<Result<String, String>> {
    let rest = line.trim().strip_prefix("<!--")?.trim_start();
    let rest = rest.strip_prefix("doc-test:")?;
    let Some(inner) = rest.trim_end().strip_suffix("-->") else {
        return Some(Err("a doc-test marker must end with --> on its line".into()));
    };
    let inner = inner.trim();
    let Some(reason) = inner.strip_prefix("skip") else {
        return Some(Err(format!(
            "unknown doc-test marker {inner:?}: the one known is `skip — reason`"
        )));
    };
    let reason = reason
        .trim_start()
        .trim_start_matches(['—', '–', '-', ':'])
        .trim();
    if reason.is_empty() {
        return Some(Err(
            "a skipped block needs its reason: <!-- doc-test: skip — why -->".into(),
        ));
    }
    Some(Ok(reason.to_string()))
}

/// The fenced blocks of a Markdown text (fences of ``` or ~~~ at the start of a line,
/// up to three spaces in), with their markers.
fn fenced_blocks(text: &str) -> Result<Vec<Fenced>, String> {
    let mut blocks = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    // The open block, with its fence's character and length.
    let mut open: Option<(char, usize, Fenced)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some((fence_char, fence_len, block)) = &mut open {
            let trimmed = line.trim();
            if trimmed.len() >= *fence_len
                && trimmed.chars().all(|c| c == *fence_char)
                && line.len() - line.trim_start().len() <= 3
            {
                let (_, _, block) = open.take().expect("open block");
                blocks.push(block);
            } else {
                block.body.push_str(line);
                block.body.push('\n');
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let start = line.trim_start();
        let fence_char = start.chars().next();
        if indent <= 3 && matches!(fence_char, Some('`' | '~')) {
            let c = fence_char.expect("fence char");
            let fence: String = start.chars().take_while(|&x| x == c).collect();
            if fence.len() >= 3 {
                let info = start[fence.len()..].trim().to_string();
                let skip = pending.take().map(|(_, reason)| reason);
                open = Some((
                    c,
                    fence.len(),
                    Fenced {
                        line: number,
                        info,
                        body: String::new(),
                        skip,
                    },
                ));
                continue;
            }
        }
        if let Some(found) = marker(line) {
            let reason = found.map_err(|e| format!("line {number}: {e}"))?;
            if let Some((at, _)) = pending {
                return Err(format!(
                    "line {at}: a doc-test marker must come right before a fenced block"
                ));
            }
            pending = Some((number, reason));
            continue;
        }
        if !line.trim().is_empty()
            && let Some((at, _)) = pending
        {
            return Err(format!(
                "line {at}: a doc-test marker must come right before a fenced block"
            ));
        }
    }
    if let Some((_, _, block)) = open {
        return Err(format!(
            "line {}: this fenced block is never closed",
            block.line
        ));
    }
    if let Some((at, _)) = pending {
        return Err(format!(
            "line {at}: a doc-test marker must come right before a fenced block"
        ));
    }
    Ok(blocks)
}

/// What of a document runs, and what its answers are.
fn read_document(text: &str) -> Result<Document, String> {
    let mut doc = Document::default();
    // Whether the previous fenced block is the last step (so an expected block may follow).
    let mut after_step = false;
    for block in fenced_blocks(text)? {
        if is_shell(&block.info) {
            if let Some(reason) = block.skip {
                doc.skipped.push((block.line, reason));
                after_step = false;
                continue;
            }
            if let Some(offset) = block.body.lines().position(|l| l.contains("# →")) {
                return Err(format!(
                    "line {}: an answer in a comment is not checked: show it in a \
                     `json expected` or `text expected` block after the commands",
                    block.line + 1 + offset
                ));
            }
            doc.steps.push(Step {
                line: block.line,
                body: block.body,
                expected: None,
            });
            after_step = true;
            continue;
        }
        if block.skip.is_some() {
            return Err(format!(
                "line {}: only shell blocks run, so only they can be skipped",
                block.line
            ));
        }
        if let Some(kind) = expect_kind(&block.info) {
            let step = doc.steps.last_mut().filter(|_| after_step).ok_or_else(|| {
                format!(
                    "line {}: an expected block must be the next fenced block after a shell \
                     block that runs",
                    block.line
                )
            })?;
            step.expected = Some(Expected {
                line: block.line,
                kind,
                body: block.body,
            });
        }
        after_step = false;
    }
    Ok(doc)
}

// ---------------------------------------------------------------------------------
// Comparing answers

/// Whether `text` matches `pattern`, where each `…` of the pattern matches any text.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split(ANY);
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The first difference between a shown JSON value and an actual one, at a JSON
/// pointer.
fn json_difference(expected: &Value, actual: &Value, at: &str) -> Option<String> {
    let here = if at.is_empty() { "the value" } else { at };
    match (expected, actual) {
        (Value::String(e), _) if e == ANY => None,
        (Value::String(e), Value::String(a)) if e.contains(ANY) => {
            (!glob(e, a)).then(|| format!("{here}: {a:?} does not have the shape {e:?}"))
        }
        (Value::Object(e), Value::Object(a)) => {
            let open = e.get(ANY).is_some_and(|v| v == ANY);
            for (key, value) in e {
                if key == ANY {
                    continue;
                }
                let pointer = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match a.get(key) {
                    None => return Some(format!("{pointer}: missing (shown: {value})")),
                    Some(found) => {
                        if let Some(d) = json_difference(value, found, &pointer) {
                            return Some(d);
                        }
                    }
                }
            }
            if !open {
                let extra: Vec<&String> = a.keys().filter(|k| !e.contains_key(*k)).collect();
                if !extra.is_empty() {
                    return Some(format!(
                        "{here}: members not shown: {extra:?} (show them, or add \"…\": \"…\")"
                    ));
                }
            }
            None
        }
        (Value::Array(e), Value::Array(a)) => {
            let open = e.last().is_some_and(|v| v == ANY);
            let shown = if open { &e[..e.len() - 1] } else { &e[..] };
            if a.len() < shown.len() || (!open && a.len() != shown.len()) {
                return Some(format!("{here}: {} elements, {} shown", a.len(), e.len()));
            }
            shown
                .iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (e, a))| json_difference(e, a, &format!("{at}/{i}")))
        }
        (Value::Number(e), Value::Number(a)) => {
            (e.as_f64() != a.as_f64()).then(|| format!("{here}: {a}, shown: {e}"))
        }
        (e, a) => (e != a).then(|| format!("{here}: {a}, shown: {e}")),
    }
}

fn json_values(text: &str) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// Whether `lines` match `pattern` (`…` lines match any number of lines).
fn lines_match(pattern: &[&str], lines: &[&str]) -> bool {
    match pattern.split_first() {
        None => lines.is_empty(),
        Some((&p, rest)) if p.trim() == ANY => {
            (0..=lines.len()).any(|skip| lines_match(rest, &lines[skip..]))
        }
        Some((&p, rest)) => lines
            .split_first()
            .is_some_and(|(&l, more)| glob(p.trim_end(), l.trim_end()) && lines_match(rest, more)),
    }
}

/// Why `output` is not the answer shown, if it is not.
fn compare(expected: &Expected, output: &str) -> Option<String> {
    match expected.kind {
        ExpectKind::Json => {
            let shown = match json_values(&expected.body) {
                Ok(v) => v,
                Err(e) => return Some(format!("the json expected block is not JSON: {e}")),
            };
            let actual = match json_values(output) {
                Ok(v) => v,
                Err(e) => return Some(format!("the output is not JSON: {e}")),
            };
            if shown.len() != actual.len() {
                return Some(format!(
                    "{} JSON values in the output, {} shown",
                    actual.len(),
                    shown.len()
                ));
            }
            shown
                .iter()
                .zip(&actual)
                .enumerate()
                .find_map(|(i, (e, a))| {
                    json_difference(e, a, "").map(|d| {
                        if shown.len() > 1 {
                            format!("value {}: {d}", i + 1)
                        } else {
                            d
                        }
                    })
                })
        }
        ExpectKind::Text => {
            let shown: Vec<&str> = expected.body.lines().collect();
            let actual: Vec<&str> = output.lines().collect();
            (!lines_match(&shown, &actual)).then(|| "the output is not the text shown".into())
        }
    }
}

// ---------------------------------------------------------------------------------
// Running a document

/// Run before the blocks: strict mode, a trace of the command that fails, and `curl`
/// failing on HTTP errors unless the command prints the status itself.
const PRELUDE: &str = r#"set -Eeuo pipefail
shopt -s inherit_errexit
for tool in curl jq openssl xxd; do
  command -v "$tool" >/dev/null || {
    echo "the docs need $tool (Debian: apt-get install $tool; .ci/run installs it)" >&2
    exit 2
  }
done
[[ $(openssl version) =~ ^OpenSSL\ [3-9] ]] || {
  echo "the docs need OpenSSL 3 or later, not $(openssl version)" >&2
  exit 2
}
if command curl --help all 2>/dev/null | grep -q -- --fail-with-body; then
  doc_test_fail=--fail-with-body
else
  doc_test_fail=--fail   # curl before 7.76: fails all the same, without the body
fi
trap 'printf "%s:%s\n" "${BASH_SOURCE[0]##*/}" "$LINENO" >>"$DOC_TEST_RUN/failed"' ERR
curl() {
  # A command that prints the status (-w) or chose its own failure mode (-f) is left alone.
  local arg
  for arg in "$@"; do
    case $arg in
      --write-out | --fail | --fail-with-body) command curl -q "$@"; return ;;
      --*) ;;
      -*[wf]*) command curl -q "$@"; return ;;
    esac
  done
  local body status=0
  body=$(mktemp)
  command curl -q "$doc_test_fail" --show-error "$@" >"$body" || status=$?
  cat "$body"
  if ((status != 0)); then
    printf 'curl exited %d; the answer was:\n' "$status" >&2
    cat "$body" >&2
    echo >&2
  fi
  rm -f "$body"
  return "$status"
}
"#;

fn numbered(body: &str, first: usize) -> String {
    body.lines()
        .enumerate()
        .map(|(i, l)| format!("{:>5} | {l}\n", first + i))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn section(out: &mut String, title: &str, text: &str) {
    let _ = writeln!(out, "--- {title} ---");
    out.push_str(text);
    if !text.is_empty() && !text.ends_with('\n') {
        out.push('\n');
    }
}

/// The `toaster` binary of this build: `cargo test` builds it beside the test
/// executables (`target/<profile>/toaster`, the test being in `target/<profile>/deps`)
/// for the host's own integration tests.
fn toaster_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join("toaster");
    assert!(
        binary.is_file(),
        "{} is missing: the docs use the `toaster` command; build it with `cargo build -p toaster` \
         (scripts/test builds it)",
        binary.display()
    );
    binary
}

async fn run_document(path: &str) {
    let file = workspace_root().join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc = read_document(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (line, reason) in &doc.skipped {
        eprintln!("{path}:{line}: skipped: {reason}");
    }
    if doc.steps.is_empty() {
        return;
    }

    let app = TestApp::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let run = dir.path().join("run");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::create_dir_all(&work).expect("work dir");
    let mut script = String::from(PRELUDE);
    for (i, step) in doc.steps.iter().enumerate() {
        std::fs::write(run.join(format!("block-{i}.sh")), &step.body).expect("block");
        let _ = writeln!(
            script,
            "{{ . \"$DOC_TEST_RUN/block-{i}.sh\"; }} >\"$DOC_TEST_RUN/{i}.out\" 2>\"$DOC_TEST_RUN/{i}.err\" </dev/null\n\
             echo {i} >>\"$DOC_TEST_RUN/done\""
        );
    }
    std::fs::write(run.join("doc-test.sh"), &script).expect("script");

    // `toaster` on the PATH, as a reader who installed it has it, and a config
    // directory of the run's own for `toaster login`.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(toaster_binary(), bin.join("toaster")).expect("toaster link");
    let mut search_path = std::ffi::OsString::from(&bin);
    if let Some(rest) = std::env::var_os("PATH") {
        search_path.push(":");
        search_path.push(rest);
    }

    let mut command = tokio::process::Command::new("bash");
    command
        .arg(run.join("doc-test.sh"))
        .current_dir(&work)
        // Nothing of the environment the tests run in but what finds the tools: a
        // document must set what it uses.
        .env_clear()
        .envs(
            ["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL"]
                .iter()
                .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
        )
        .env("PATH", search_path)
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("TOASTER", &app.host.base)
        .env("OPERATOR", app.operator_token())
        .env("DOC_TEST_RUN", &run)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(run.join("shell.out")).expect("shell.out"))
        .stderr(std::fs::File::create(run.join("shell.err")).expect("shell.err"))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().expect("bash");
    let pid = child.id();
    let (status, timed_out) = match tokio::time::timeout(DOC_TIMEOUT, child.wait()).await {
        Ok(status) => (Some(status.expect("bash ran")), false),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The whole process group: bash and whatever it started.
                // SAFETY: kill(2) with a process group id; no memory is involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            (None, true)
        }
    };
    app.stop().await;

    let done: BTreeSet<usize> = read(&run.join("done"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut report = String::new();
    for (i, step) in doc.steps.iter().enumerate() {
        let out = read(&run.join(format!("{i}.out")));
        let err = read(&run.join(format!("{i}.err")));
        let problem = if done.contains(&i) {
            step.expected.as_ref().and_then(|e| {
                compare(e, &out).map(|why| {
                    format!(
                        "{path}:{}: the answer shown at line {} is not the output: {why}",
                        step.line, e.line
                    )
                })
            })
        } else if timed_out {
            Some(format!(
                "{path}:{}: did not finish within {} s",
                step.line,
                DOC_TIMEOUT.as_secs()
            ))
        } else {
            // The trap's lines, innermost first: the block's line that failed (a
            // command spanning lines is named by its first).
            let lines: Vec<&str> = text.lines().collect();
            let mut failed: Vec<String> = Vec::new();
            for entry in read(&run.join("failed")).lines() {
                let Some((file, line)) = entry.split_once(':') else {
                    continue;
                };
                let block = file
                    .strip_prefix("block-")
                    .and_then(|f| f.strip_suffix(".sh"))
                    .and_then(|b| b.parse::<usize>().ok());
                let (Some(block), Ok(line)) = (block, line.trim().parse::<usize>()) else {
                    continue;
                };
                let Some(at) = doc.steps.get(block).map(|s| s.line + line) else {
                    continue;
                };
                let shown = format!(
                    "  {path}:{at}: {}",
                    lines.get(at - 1).map(|l| l.trim()).unwrap_or("")
                );
                if !failed.contains(&shown) {
                    failed.push(shown);
                }
            }
            let status = status.map(|s| s.to_string()).unwrap_or_default();
            Some(format!(
                "{path}:{}: the block failed ({status}){}",
                step.line,
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(", at:\n{}", failed.join("\n"))
                }
            ))
        };
        if std::env::var_os("DOC_TEST_SHOW").is_some() {
            eprintln!(
                "{path}:{}:\n{}--- output ---\n{out}--- errors ---\n{err}",
                step.line,
                numbered(&step.body, step.line + 1)
            );
        }
        if let Some(problem) = problem {
            let _ = writeln!(report, "\n{problem}");
            section(
                &mut report,
                "the block",
                &numbered(&step.body, step.line + 1),
            );
            if let Some(e) = &step.expected {
                section(&mut report, "the answer shown", &e.body);
            }
            section(&mut report, "its output", &out);
            section(&mut report, "its errors", &err);
        }
        if !done.contains(&i) {
            break;
        }
    }
    let shell_errors = read(&run.join("shell.err"));
    if report.is_empty() && !status.is_some_and(|s| s.success()) {
        report = format!("{path}: the shell exited {status:?} after every block\n");
    }
    if !report.is_empty() && !shell_errors.is_empty() {
        section(&mut report, "the shell's own errors", &shell_errors);
    }
    assert!(
        report.is_empty(),
        "{path} does not work as written:\n{report}"
    );
}

// ---------------------------------------------------------------------------------
// Coverage and the convention itself

fn markdown_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_document_with_shell_blocks_is_run_or_says_why_not() {
    let root = workspace_root();
    for file in markdown_files() {
        let name = file
            .strip_prefix(&root)
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).expect("read");
        let blocks = fenced_blocks(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let has_shell = blocks.iter().any(|b| is_shell(&b.info));
        let run = DOCS.contains(&name.as_str());
        let excused = NOT_RUN.iter().any(|(n, _)| *n == name);
        assert!(
            !has_shell || run || excused,
            "{name} has shell blocks but no doc test: add it to doc_tests! in tests/tests/docs.rs"
        );
        if run {
            read_document(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn blocks_markers_and_answers_are_read() {
    let text = "Intro\n\n```sh\nA=1\necho $A\n```\n\nIt prints:\n\n```text expected\n1\n```\n\n\
                <!-- doc-test: skip — needs a cluster -->\n```sh\nkubectl apply\n```\n\n\
                ```toml\nx = 1\n```\n\n````sh\necho '```'\n````\n";
    let doc = read_document(text).expect("valid");
    assert_eq!(doc.steps.len(), 2);
    assert_eq!(doc.steps[0].line, 3);
    assert_eq!(doc.steps[0].body, "A=1\necho $A\n");
    let expected = doc.steps[0].expected.as_ref().expect("answer");
    assert_eq!(expected.kind, ExpectKind::Text);
    assert_eq!(expected.body, "1\n");
    assert_eq!(doc.skipped, vec![(15, "needs a cluster".to_string())]);
    assert_eq!(doc.steps[1].body, "echo '```'\n");

    for (bad, why) in [
        (
            "<!-- doc-test: skip -->\n```sh\nx\n```\n",
            "needs its reason",
        ),
        (
            "<!-- doc-test: run -->\n```sh\nx\n```\n",
            "unknown doc-test marker",
        ),
        (
            "<!-- doc-test: skip — x -->\ntext\n```sh\nx\n```\n",
            "right before",
        ),
        (
            "```json expected\n{}\n```\n",
            "must be the next fenced block",
        ),
        (
            "```sh\nx\n```\n```toml\n```\n```json expected\n{}\n```\n",
            "must be the next",
        ),
        (
            "```sh\nx\n```\n```json expected\n{}\n```\n```json expected\n{}\n```\n",
            "must be the next",
        ),
        ("```sh\ncurl x   # → {}\n```\n", "not checked"),
        ("```sh\nx\n", "never closed"),
        (
            "<!-- doc-test: skip — x -->\n```toml\n```\n",
            "only shell blocks",
        ),
    ] {
        let e = read_document(bad).expect_err(bad);
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn json_answers_match_with_placeholders() {
    let shown = |s: &str| Expected {
        line: 1,
        kind: ExpectKind::Json,
        body: s.to_string(),
    };
    let ok = [
        (r#"{"a": 1, "b": "x"}"#, r#"{"b":"x","a":1.0}"#),
        (r#"{"a": "…"}"#, r#"{"a": {"deep": [1]}}"#),
        (
            r#"{"id": "ro_…", "…": "…"}"#,
            r#"{"id": "ro_0123", "more": null}"#,
        ),
        (r#"[1, "…"]"#, r#"[1, 2, 3]"#),
        (r#"[1, "…"]"#, r#"[1]"#),
        ("{\"a\": 1}\n{\"b\": 2}", "{\"a\":1}{\"b\":2}"),
        (r#""a…b…c""#, r#""a-x-b-y-c""#),
    ];
    for (e, a) in ok {
        assert_eq!(compare(&shown(e), a), None, "{e} vs {a}");
    }
    let refused = [
        (r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#, "members not shown"),
        (r#"{"a": 1, "b": 2}"#, r#"{"a": 1}"#, "/b: missing"),
        (
            r#"{"a": {"b": 1}}"#,
            r#"{"a": {"b": 2}}"#,
            "/a/b: 2, shown: 1",
        ),
        (r#"{"id": "ro_…"}"#, r#"{"id": "fw_1"}"#, "shape"),
        (r#"[1, 2]"#, r#"[1, 2, 3]"#, "3 elements"),
        (r#"{}"#, "{}{}", "2 JSON values"),
        (r#"{}"#, "null\nnot json", "not JSON"),
        (r#""a…b""#, r#""ba""#, "shape"),
    ];
    for (e, a, why) in refused {
        let d = compare(&shown(e), a).unwrap_or_else(|| panic!("{e} matched {a}"));
        assert!(d.contains(why), "{e} vs {a}: {d}");
    }
}

#[test]
fn text_answers_match_with_placeholders() {
    let shown = |s: &str| Expected {
        line: 1,
        kind: ExpectKind::Text,
        body: s.to_string(),
    };
    assert_eq!(compare(&shown("204\n"), "204\n"), None);
    assert_eq!(compare(&shown("a …\n…\nz\n"), "a b c\n1\n2\nz  \n"), None);
    assert_eq!(compare(&shown("…\n"), ""), None);
    assert!(compare(&shown("204\n"), "200\n").is_some());
    assert!(compare(&shown("a\n"), "a\nb\n").is_some());
    assert!(glob("x…y", "xy"));
    assert!(!glob("x…yy", "xy"));
    assert!(glob("…", ""));
}

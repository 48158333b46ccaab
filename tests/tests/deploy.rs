//! The deployment, checked where no cluster is: every manifest under
//! infra/deploy/spinkube/ parses and names itself; the SpinApp binds every variable
//! spin.toml cannot do without; every Secret a manifest reads is defined there; the
//! runtime config shares the key-value store between replicas. And the maintenance the
//! CronJob runs (`toaster retention`) against a real database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use toaster_cli::retention::{self, RetentionError};
use toaster_host::runtime_config::{KvStoreConfig, RuntimeConfig};
use toaster_tests::{TestDb, workspace_root};

/// One YAML document and the file it came from.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
}

fn spinkube_dir() -> PathBuf {
    workspace_root().join("infra/deploy/spinkube")
}

/// Every document of every .yaml/.yml file in `dir`, in file order.
fn read_docs(dir: &Path) -> Vec<Doc> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for de in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(de).unwrap_or_else(|e| panic!("{file}: {e}"));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

/// The variables of a spin.toml that a deployment must supply: `required = true`, or
/// no default.
fn required_variables(spin_toml: &str) -> BTreeSet<String> {
    let manifest: toml::Table = toml::from_str(spin_toml).expect("spin.toml parses");
    manifest
        .get("variables")
        .and_then(|v| v.as_table())
        .map(|vars| {
            vars.iter()
                .filter(|(_, v)| {
                    v.get("required").and_then(|r| r.as_bool()) == Some(true)
                        || v.get("default").is_none()
                })
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn declared_variables(spin_toml: &str) -> BTreeSet<String> {
    let manifest: toml::Table = toml::from_str(spin_toml).expect("spin.toml parses");
    manifest
        .get("variables")
        .and_then(|v| v.as_table())
        .map(|vars| vars.keys().cloned().collect())
        .unwrap_or_default()
}

/// Problems with the SpinApp's `variables` against what `spin_toml` declares.
fn variable_problems(spin_toml: &str, docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let apps: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "SpinApp").collect();
    if apps.is_empty() {
        return vec!["no SpinApp".into()];
    }
    let declared = declared_variables(spin_toml);
    for app in apps {
        let mut bound = BTreeSet::new();
        for var in app.value["spec"]["variables"]
            .as_sequence()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let name = var["name"].as_str().unwrap_or("").to_string();
            if !declared.contains(&name) {
                problems.push(format!(
                    "{}: SpinApp {} binds {name:?}, which spin.toml does not declare",
                    app.file,
                    app.name()
                ));
            }
            if var.get("value").is_none() && var.get("valueFrom").is_none() {
                problems.push(format!("{}: variable {name:?} has no value", app.file));
            }
            bound.insert(name);
        }
        for name in required_variables(spin_toml) {
            if !bound.contains(&name) {
                problems.push(format!(
                    "{}: SpinApp {} does not supply {name:?}, which spin.toml requires",
                    app.file,
                    app.name()
                ));
            }
        }
    }
    problems
}

/// Every `secretKeyRef` {name, key} anywhere in `value`.
fn secret_refs(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                if k.as_str() == Some("secretKeyRef") {
                    out.push((
                        v["name"].as_str().unwrap_or("").to_string(),
                        v["key"].as_str().unwrap_or("").to_string(),
                    ));
                } else {
                    secret_refs(v, out);
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| secret_refs(v, out)),
        _ => {}
    }
}

/// Secret name → its keys (`data` and `stringData`).
fn secrets(docs: &[Doc]) -> BTreeMap<String, BTreeSet<String>> {
    docs.iter()
        .filter(|d| d.kind() == "Secret")
        .map(|d| {
            let keys = ["data", "stringData"]
                .iter()
                .filter_map(|f| d.value[*f].as_mapping())
                .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)))
                .collect();
            (d.name().to_string(), keys)
        })
        .collect()
}

fn secret_problems(docs: &[Doc]) -> Vec<String> {
    let defined = secrets(docs);
    let mut problems = Vec::new();
    for doc in docs {
        let mut refs = Vec::new();
        secret_refs(&doc.value, &mut refs);
        if let Some(name) = doc.value["spec"]["runtimeConfig"]["loadFromSecret"].as_str() {
            refs.push((name.to_string(), "runtime-config.toml".to_string()));
        }
        for (name, key) in refs {
            match defined.get(&name) {
                None => problems.push(format!(
                    "{}: {} {} reads Secret {name:?}, which no manifest defines",
                    doc.file,
                    doc.kind(),
                    doc.name()
                )),
                Some(keys) if !keys.contains(&key) => problems.push(format!(
                    "{}: {} {} reads key {key:?} of Secret {name:?}, which has only {keys:?}",
                    doc.file,
                    doc.kind(),
                    doc.name()
                )),
                Some(_) => {}
            }
        }
    }
    problems
}

fn spin_toml() -> String {
    std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap()
}

#[test]
fn every_manifest_parses_and_names_its_api_kind_and_itself() {
    let docs = read_docs(&spinkube_dir());
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for kind in ["SpinApp", "Secret", "Job", "CronJob"] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    let mut names = BTreeSet::new();
    for doc in &docs {
        for field in ["apiVersion", "kind"] {
            assert!(
                doc.value[field].as_str().is_some_and(|s| !s.is_empty()),
                "{}: a document without {field}",
                doc.file
            );
        }
        assert!(
            !doc.name().is_empty(),
            "{}: a {} without metadata.name",
            doc.file,
            doc.kind()
        );
        assert!(
            names.insert((doc.kind().to_string(), doc.name().to_string())),
            "{}: a second {} named {}",
            doc.file,
            doc.kind(),
            doc.name()
        );
    }
    let app = docs.iter().find(|d| d.kind() == "SpinApp").unwrap();
    assert_eq!(app.value["apiVersion"], "core.spinkube.dev/v1alpha1");
    assert_eq!(app.value["spec"]["executor"], "containerd-shim-spin");
    assert!(
        app.value["spec"]["replicas"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "more than one replica: the point of the deployment"
    );
}

#[test]
fn the_spinapp_supplies_every_variable_spin_toml_requires() {
    let docs = read_docs(&spinkube_dir());
    let spin = spin_toml();
    assert!(
        required_variables(&spin).contains("db_url"),
        "the check reads spin.toml's variables"
    );
    assert_eq!(variable_problems(&spin, &docs), Vec::<String>::new());

    // The check itself: a variable added to spin.toml and forgotten in the SpinApp.
    let added = spin.replacen(
        "[variables]\n",
        "[variables]\nmqtt_password = { required = true, secret = true }\nregion = { description = \"no default\" }\n",
        1,
    );
    assert_ne!(added, spin);
    let problems = variable_problems(&added, &docs);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("mqtt_password"), "{problems:?}");
    assert!(problems[1].contains("region"), "{problems:?}");
}

#[test]
fn every_secret_a_manifest_reads_is_defined_with_that_key() {
    let docs = read_docs(&spinkube_dir());
    assert_eq!(secret_problems(&docs), Vec::<String>::new());
    let mut refs = Vec::new();
    for doc in &docs {
        secret_refs(&doc.value, &mut refs);
    }
    assert!(refs.len() >= 4, "{refs:?}");

    // The check itself: a misspelt Secret, and a key the Secret lacks.
    let mut broken = read_docs(&spinkube_dir());
    let app = broken.iter_mut().find(|d| d.kind() == "SpinApp").unwrap();
    app.value["spec"]["variables"][0]["valueFrom"]["secretKeyRef"]["name"] =
        Value::from("toaster-dbb");
    app.value["spec"]["variables"][2]["valueFrom"]["secretKeyRef"]["key"] =
        Value::from("signing_key");
    let problems = secret_problems(&broken);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("toaster-dbb"), "{problems:?}");
    assert!(problems[1].contains("signing_key"), "{problems:?}");
}

#[test]
fn the_replicas_share_one_redis_key_value_store() {
    let docs = read_docs(&spinkube_dir());
    let app = docs.iter().find(|d| d.kind() == "SpinApp").unwrap();
    let secret_name = app.value["spec"]["runtimeConfig"]["loadFromSecret"]
        .as_str()
        .expect("runtimeConfig.loadFromSecret");
    let secret = docs
        .iter()
        .find(|d| d.kind() == "Secret" && d.name() == secret_name)
        .expect("the runtime-config Secret");
    let text = secret.value["stringData"]["runtime-config.toml"]
        .as_str()
        .expect("runtime-config.toml in stringData");

    // Every label a component opens is a Redis store: the replicas see the same keys.
    let manifest: toml::Table = toml::from_str(&spin_toml()).unwrap();
    let labels: BTreeSet<String> = manifest["component"]
        .as_table()
        .unwrap()
        .values()
        .flat_map(|c| {
            c.get("key_value_stores")
                .and_then(|s| s.as_array())
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    assert!(labels.contains("default"), "{labels:?}");
    // Through our host's own reader of Spin's format: the file means the same to both.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runtime-config.toml");
    std::fs::write(&file, text).unwrap();
    let config = RuntimeConfig::load(&file).expect("the host reads the runtime config");
    for label in &labels {
        assert!(
            matches!(
                config.key_value_stores.get(label),
                Some(KvStoreConfig::Redis { .. })
            ),
            "label {label:?} is not a Redis store in {secret_name}"
        );
    }
}

#[test]
fn the_jobs_run_the_toaster_image_against_the_database_secret() {
    let docs = read_docs(&spinkube_dir());
    let main_rs = std::fs::read_to_string(workspace_root().join("infra/cli/src/main.rs")).unwrap();
    let dockerfile =
        std::fs::read_to_string(workspace_root().join("infra/deploy/Dockerfile")).unwrap();
    let mut jobs = 0;
    for doc in docs
        .iter()
        .filter(|d| matches!(d.kind(), "Job" | "CronJob"))
    {
        let pod = if doc.kind() == "Job" {
            &doc.value["spec"]["template"]["spec"]
        } else {
            &doc.value["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        };
        for container in pod["containers"].as_sequence().unwrap() {
            jobs += 1;
            let image = container["image"].as_str().unwrap();
            assert!(
                image.contains("/toaster-cli:") && dockerfile.contains(image),
                "{}: {image} is not the image infra/deploy/Dockerfile builds",
                doc.file
            );
            // The subcommand it runs exists (a variant of main.rs's Command).
            let line = [&container["command"], &container["args"]]
                .iter()
                .filter_map(|v| v.as_sequence())
                .flatten()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let sub = line
                .split_whitespace()
                .skip_while(|w| *w != "toaster")
                .nth(1)
                .or_else(|| {
                    container["command"]
                        .is_null()
                        .then(|| line.split_whitespace().next())
                        .flatten()
                })
                .unwrap_or_else(|| panic!("{}: no toaster subcommand in {line:?}", doc.file));
            let variant = format!("    {}{} {{", sub[..1].to_uppercase(), &sub[1..]);
            assert!(
                main_rs.contains(&variant),
                "{}: `toaster {sub}` is not a subcommand",
                doc.file
            );
            let env = container["env"].as_sequence().unwrap();
            assert!(
                env.iter().any(|e| e["name"] == "TOASTER_DATABASE_URL"
                    && e["valueFrom"]["secretKeyRef"]["name"] == "toaster-db"),
                "{}: TOASTER_DATABASE_URL from the toaster-db Secret",
                doc.file
            );
        }
    }
    assert!(jobs >= 3, "migrate, retention, backup");
}

// ---------------------------------------------------------------- the CronJob's work

async fn partitions(db: &TestDb) -> BTreeSet<String> {
    db.client()
        .await
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'telemetry'::regclass",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn retention_drops_expired_partitions_and_creates_the_week_ahead() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ('acme', 'Acme', 'test'); \
             SELECT toaster_ensure_telemetry_partitions(now() - interval '100 days', now() - interval '100 days'); \
             INSERT INTO telemetry VALUES ('acme', 'd1', 'm', now() - interval '100 days', 1, false), \
                                          ('acme', 'd1', 'm', now(), 2, false)",
        )
        .await
        .unwrap();
    let names = client
        .query_one(
            "SELECT 'telemetry_' || to_char((now() AT TIME ZONE 'UTC')::date - 100, 'YYYYMMDD'), \
                    'telemetry_' || to_char((now() AT TIME ZONE 'UTC')::date + 7, 'YYYYMMDD')",
            &[],
        )
        .await
        .unwrap();
    let (old, ahead): (String, String) = (names.get(0), names.get(1));
    client
        .batch_execute(&format!("DROP TABLE {ahead}"))
        .await
        .unwrap();
    assert!(partitions(&db).await.contains(&old));

    let report = retain(&client, Duration::from_secs(5))
        .await
        .expect("retention");
    assert_eq!(report.partitions_dropped, vec![old.clone()], "{report}");
    assert_eq!(report.partitions_created, 1, "{report}");
    assert_eq!(report.tenants, 1);
    let now = partitions(&db).await;
    assert!(!now.contains(&old) && now.contains(&ahead), "{now:?}");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM telemetry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "today's reading stays");

    // Again: nothing left to do.
    let again = retain(&client, Duration::from_secs(5)).await.unwrap();
    assert!(again.partitions_dropped.is_empty() && again.partitions_created == 0);
}

/// One retention run over every tenant, commands kept for the default 30 days.
async fn retain(
    client: &tokio_postgres::Client,
    lock_timeout: Duration,
) -> Result<retention::RetentionReport, RetentionError> {
    retention::run(
        client,
        None,
        lock_timeout,
        retention::DEFAULT_COMMAND_RETENTION,
    )
    .await
}

#[tokio::test]
async fn retention_gives_up_behind_a_lock_rather_than_stall_ingest() {
    let db = TestDb::new().await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ('acme', 'Acme', 'test'); \
             SELECT toaster_ensure_telemetry_partitions(now() - interval '100 days', now() - interval '100 days')",
        )
        .await
        .unwrap();
    let before = partitions(&db).await;
    // A long reader (as pg_dump is) holds telemetry for the length of its transaction.
    let mut reader = db.client().await;
    let tx = reader.transaction().await.unwrap();
    tx.query("SELECT count(*) FROM telemetry", &[])
        .await
        .unwrap();

    let client = db.client().await;
    let started = std::time::Instant::now();
    let err = retain(&client, Duration::from_millis(300))
        .await
        .expect_err("the drop cannot get its lock");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, RetentionError::LockTimeout { .. }), "{err}");
    assert!(err.to_string().contains("next run"), "{err}");
    tx.rollback().await.unwrap();
    assert_eq!(partitions(&db).await, before, "nothing was dropped");

    // Once the reader is gone, the next run does it.
    let report = retain(&client, Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.partitions_dropped.len(), 1, "{report}");
}

#[tokio::test]
async fn retention_on_an_unmigrated_database_says_to_migrate() {
    let db = TestDb::empty().await;
    let err = retain(&db.client().await, Duration::from_secs(5))
        .await
        .expect_err("no functions yet");
    assert!(matches!(err, RetentionError::NotMigrated { .. }), "{err}");
    assert!(err.to_string().contains("toaster migrate"), "{err}");
}

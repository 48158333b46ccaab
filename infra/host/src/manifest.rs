//! The application manifest: the subset of Spin's `spin.toml` (manifest version 2)
//! that Toaster's host serves, read as strictly as Spin 4 reads it: a key Spin does
//! not know is an error (Spin's manifest types deny unknown fields), names follow
//! Spin's rules, and templates and `allowed_outbound_hosts` entries are checked
//! before anything runs. Anything we would have to get wrong silently (a component
//! source that is a URL, `files`, non-HTTP triggers, features this host does not
//! implement) is refused. docs/spin-differences.draft.md lists what still differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::outbound::{AllowedHosts, check_entry};
use crate::template::{render_with, template_references};

#[derive(Debug, Clone)]
pub struct Manifest {
    /// The directory holding spin.toml; relative paths resolve against it.
    pub root: PathBuf,
    pub name: String,
    pub variables: BTreeMap<String, VariableDecl>,
    pub routes: Vec<HttpTrigger>,
    pub components: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

/// `[component.<id>]`: every key Spin 4 accepts is known here; those this host
/// has no use for are read (so their types are checked) and otherwise ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDecl {
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub build: Option<BuildDecl>,
    #[serde(default)]
    pub files: Vec<toml::Value>,
    /// Refused when not empty: Spin's deprecated spelling of `allowed_outbound_hosts`.
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    /// Refused when not empty: this host provides neither SQLite nor AI models.
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    /// Refused when not empty: this host does not compose components.
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    // Accepted and ignored: they change nothing when an app runs without `--profile`.
    #[serde(default)]
    #[allow(dead_code)]
    exclude_files: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    targets: Option<Vec<toml::Value>>,
    #[serde(default)]
    #[allow(dead_code)]
    tool: BTreeMap<String, toml::Table>,
    #[serde(default)]
    #[allow(dead_code)]
    dependencies_inherit_configuration: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    profile: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildDecl {
    pub command: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    /// Required, as in Spin.
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    targets: Vec<toml::Value>,
    /// `[application.trigger.<type>]`: trigger-wide settings.
    #[serde(default)]
    trigger: BTreeMap<String, toml::Table>,
    #[serde(default)]
    tool: BTreeMap<String, toml::Table>,
}

/// One `[[trigger.http]]`: the keys Spin's HTTP trigger accepts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    #[serde(default)]
    component: Option<toml::Value>,
    route: toml::Value,
    #[serde(default)]
    executor: Option<toml::Value>,
    #[serde(default)]
    static_response: Option<toml::Value>,
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let root = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        };
        Self::parse(&text, root).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str, root: PathBuf) -> anyhow::Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).context("invalid spin.toml")?;
        match &raw.spin_manifest_version {
            toml::Value::Integer(2) => {}
            other => bail!("spin_manifest_version must be the integer 2 (found {other})"),
        }
        check_application_trigger_settings(&raw.application.trigger)?;
        for (name, var) in &raw.variables {
            if !is_variable_name(name) {
                bail!("[variables] {name:?}: {VARIABLE_NAME_RULE}");
            }
            if var.required && var.default.is_some() {
                bail!("variable {name:?} cannot be both required and have a default");
            }
            if !var.required && var.default.is_none() {
                bail!("variable {name:?} needs a default or `required = true`");
            }
        }
        let mut routes = Vec::new();
        for (kind, triggers) in raw.trigger {
            if kind != "http" {
                bail!("trigger type {kind:?} is not supported (only http)");
            }
            for (i, table) in triggers.into_iter().enumerate() {
                let trigger: RawHttpTrigger = toml::Value::Table(table)
                    .try_into()
                    .with_context(|| format!("[[trigger.http]] number {}", i + 1))?;
                if let Some(route) = http_trigger(trigger, &raw.component)
                    .with_context(|| format!("[[trigger.http]] number {}", i + 1))?
                {
                    routes.push(route);
                }
            }
        }
        for (id, c) in &raw.component {
            check_component(id, c, &raw.variables).with_context(|| format!("[component.{id}]"))?;
        }
        Ok(Manifest {
            root,
            name: raw.application.name,
            variables: raw.variables,
            routes,
            components: raw.component,
        })
    }

    pub fn source_path(&self, component: &str) -> Option<PathBuf> {
        self.components
            .get(component)
            .map(|c| self.root.join(&c.source))
    }
}

/// `[application.trigger.http]`: Spin accepts only `base`, and refuses any `base` but
/// `"/"` (it is deprecated: routes carry their full path).
fn check_application_trigger_settings(
    settings: &BTreeMap<String, toml::Table>,
) -> anyhow::Result<()> {
    let Some(http) = settings.get("http") else {
        return Ok(());
    };
    for (key, value) in http {
        match (key.as_str(), value) {
            ("base", toml::Value::String(base)) if base == "/" => {
                tracing::warn!("[application.trigger.http] base = \"/\" is deprecated; remove it");
            }
            ("base", toml::Value::String(base)) => bail!(
                "[application.trigger.http] base = {base:?}: `base` is deprecated and Spin refuses any value but \"/\"; prepend it to each [[trigger.http]] route"
            ),
            ("base", other) => {
                bail!("[application.trigger.http] base must be a string (found {other})")
            }
            (other, _) => bail!(
                "[application.trigger.http] has unknown key {other:?} (Spin accepts only `base`)"
            ),
        }
    }
    Ok(())
}

/// Checks one `[[trigger.http]]`; its route, unless it is `{ private = true }`.
fn http_trigger(
    t: RawHttpTrigger,
    components: &BTreeMap<String, ComponentDecl>,
) -> anyhow::Result<Option<HttpTrigger>> {
    if t.static_response.is_some() {
        bail!("`static_response` is not supported by the toaster host");
    }
    match &t.executor {
        None => {}
        Some(toml::Value::Table(e)) => match (e.get("type").and_then(|v| v.as_str()), e.len()) {
            (Some("http" | "spin"), 1) => {}
            (Some("wagi"), _) => {
                bail!("`executor = {{ type = \"wagi\" }}` is not supported by the toaster host")
            }
            _ => bail!("invalid `executor`: expected {{ type = \"http\" }}"),
        },
        Some(other) => bail!("invalid `executor` {other}: expected {{ type = \"http\" }}"),
    }
    let component = match t.component {
        Some(toml::Value::String(s)) => s,
        Some(_) => bail!("inline trigger components are not supported; name a [component.<id>]"),
        None => bail!("`component` is missing"),
    };
    if !components.contains_key(&component) {
        bail!(
            "trigger for route {} names unknown component {component:?}",
            t.route
        );
    }
    match t.route {
        toml::Value::String(route) => {
            if !route.starts_with('/') {
                bail!("route {route:?} must start with '/'");
            }
            Ok(Some(HttpTrigger { route, component }))
        }
        // `{ private = true }`: reachable only by service chaining, which we don't offer.
        toml::Value::Table(t)
            if t.len() == 1 && t.get("private") == Some(&toml::Value::Boolean(true)) =>
        {
            Ok(None)
        }
        other => bail!(
            "route must be a string pattern or {{ private = true }} (component {component:?} has {other})"
        ),
    }
}

fn check_component(
    id: &str,
    c: &ComponentDecl,
    app_variables: &BTreeMap<String, VariableDecl>,
) -> anyhow::Result<()> {
    if !is_kebab_id(id) {
        bail!(
            "component id {id:?} is invalid: ids are words of ASCII letters and digits, each starting with a letter, joined by single '-' (e.g. my-component)"
        );
    }
    if !c.files.is_empty() {
        bail!("`files` are not supported by the toaster host");
    }
    if c.source.contains("://") {
        bail!("only local `source` paths are supported");
    }
    if !c.allowed_http_hosts.is_empty() {
        bail!(
            "`allowed_http_hosts` is deprecated and not supported by the toaster host: use allowed_outbound_hosts = [\"https://<host>\", ...]"
        );
    }
    if !c.sqlite_databases.is_empty() {
        bail!("`sqlite_databases` is not supported by the toaster host");
    }
    if !c.ai_models.is_empty() {
        bail!("`ai_models` is not supported by the toaster host");
    }
    if !c.dependencies.is_empty() {
        bail!("component `dependencies` are not supported by the toaster host");
    }
    for label in &c.key_value_stores {
        if !is_kebab_id(label) && !is_snake_id(label) {
            bail!("key_value_stores label {label:?} must be kebab-case or snake_case");
        }
    }
    for (name, template) in &c.variables {
        if !is_variable_name(name) {
            bail!("variables: {name:?}: {VARIABLE_NAME_RULE}");
        }
        for reference in
            template_references(template).with_context(|| format!("variables: {name:?}"))?
        {
            if !app_variables.contains_key(reference) {
                bail!(
                    "variables: {name:?} = {template:?} refers to {reference:?}, which is not declared in [variables]"
                );
            }
        }
    }
    for entry in &c.allowed_outbound_hosts {
        check_allowed_host(entry, app_variables)?;
    }
    Ok(())
}

/// What Spin checks of an `allowed_outbound_hosts` entry when it loads an app: the
/// template syntax; an entry without expressions in full; an entry whose variables
/// all have defaults, rendered with them. (The host renders every entry with the
/// actual values, and parses it, before it serves.)
fn check_allowed_host(
    entry: &str,
    app_variables: &BTreeMap<String, VariableDecl>,
) -> anyhow::Result<()> {
    let references = template_references(entry)
        .with_context(|| format!("allowed_outbound_hosts entry {entry:?}"))?;
    if references.is_empty() {
        AllowedHosts::parse(&[entry])?;
        return Ok(());
    }
    let default = |name: &str| app_variables.get(name).and_then(|v| v.default.as_deref());
    if references.iter().all(|r| default(r).is_some()) {
        let rendered = render_with(entry, default)?;
        check_entry(&rendered).with_context(|| {
            format!(
                "allowed_outbound_hosts entry {entry:?} is invalid with the variables' defaults ({rendered:?})"
            )
        })?;
    }
    Ok(())
}

/// What names must be, in words, for errors.
const VARIABLE_NAME_RULE: &str = "variable names are lowercase words of ASCII letters and digits, each starting with a letter, joined by single underscores (e.g. db_url)";

/// Spin's rule for the names of variables in the manifest (`LowerSnakeId`): words of
/// lowercase ASCII letters and digits, each starting with a letter, joined by single `_`.
pub fn is_variable_name(name: &str) -> bool {
    is_id(name, '_', false)
}

/// Spin's `KebabId` (component ids): words joined by single `-`, each starting with
/// an ASCII letter, then letters and digits, all lowercase or all uppercase.
fn is_kebab_id(id: &str) -> bool {
    is_id(id, '-', true)
}

/// Spin's `SnakeId`: as [`is_kebab_id`], joined by `_`.
fn is_snake_id(id: &str) -> bool {
    is_id(id, '_', true)
}

fn is_id(id: &str, delimiter: char, uppercase_words: bool) -> bool {
    !id.is_empty()
        && id.split(delimiter).all(|word| {
            let mut chars = word.chars();
            let Some(first) = chars.next().filter(char::is_ascii_alphabetic) else {
                return false;
            };
            let upper = first.is_ascii_uppercase();
            (uppercase_words || !upper)
                && chars.all(|c| {
                    c.is_ascii_digit()
                        || (c.is_ascii_alphabetic() && c.is_ascii_uppercase() == upper)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
version = "1.0.0"
[variables]
a = { default = "x" }
b = { required = true, secret = true }
h = { default = "db:5432" }
[[trigger.http]]
route = "/x/..."
component = "c"
[[trigger.http]]
route = { private = true }
component = "c"
[component.c]
source = "c.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["postgres://{{ h }}"]
[component.c.variables]
v = "{{ a }}"
[component.c.build]
command = "true"
"#;

    fn parse(text: &str) -> anyhow::Result<Manifest> {
        Manifest::parse(text, PathBuf::new())
    }

    /// The error, with its context, of `MINIMAL` with `from` replaced by `to`.
    fn refusal(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from}");
        match parse(&MINIMAL.replacen(from, to, 1)) {
            Ok(_) => panic!("accepted {to:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn parses_the_parts_we_serve() {
        let m = Manifest::parse(MINIMAL, PathBuf::from("/app")).unwrap();
        assert_eq!(m.routes.len(), 1);
        assert_eq!(m.routes[0].route, "/x/...");
        assert!(m.variables["b"].secret);
        assert_eq!(m.source_path("c").unwrap(), PathBuf::from("/app/c.wasm"));
        assert_eq!(m.components["c"].build.as_ref().unwrap().command, "true");
    }

    #[test]
    fn the_apps_own_manifest_is_accepted() {
        let text = include_str!("../../../spin.toml");
        let m = parse(text).unwrap();
        assert!(!m.routes.is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_serve_faithfully() {
        refusal("spin_manifest_version = 2", "spin_manifest_version = 1");
        refusal("component = \"c\"\n[[", "component = \"nope\"\n[[");
        refusal("{ default = \"x\" }", "{ }");
        refusal(
            "source = \"c.wasm\"",
            "source = \"c.wasm\"\nfiles = [\"x\"]",
        );
    }

    #[test]
    fn unknown_keys_are_refused_as_spin_refuses_them() {
        for (from, to, key) in [
            ("name = \"t\"", "name = \"t\"\nnmae = \"u\"", "nmae"),
            (
                "spin_manifest_version = 2",
                "colour = 1\nspin_manifest_version = 2",
                "colour",
            ),
            (
                "key_value_stores",
                "allowed_outbound_host = []\nkey_value_stores",
                "allowed_outbound_host",
            ),
            ("command = \"true\"", "command = \"true\"\nenv = 1", "env"),
            (
                "route = \"/x/...\"",
                "route = \"/x/...\"\nmethod = \"GET\"",
                "method",
            ),
            (
                "{ default = \"x\" }",
                "{ default = \"x\", type = \"s\" }",
                "type",
            ),
        ] {
            let err = refusal(from, to);
            assert!(err.contains(key), "{key}: {err}");
        }
        // Keys Spin knows and this host ignores are accepted.
        let ok = MINIMAL
            .replace(
                "source = \"c.wasm\"",
                "source = \"c.wasm\"\ndescription = \"d\"\nexclude_files = []",
            )
            .replace(
                "[component.c.build]",
                "[component.c.tool.x]\ny = 1\n[component.c.build]",
            );
        parse(&ok).unwrap();
        let ok = MINIMAL.replace(
            "version = \"1.0.0\"",
            "version = \"1.0.0\"\nauthors = [\"me\"]\ndescription = \"d\"\n[application.tool.x]\ny = 1",
        );
        parse(&ok).unwrap();
        let ok = MINIMAL.replace(
            "route = \"/x/...\"",
            "route = \"/x/...\"\nid = \"t1\"\nexecutor = { type = \"http\" }",
        );
        parse(&ok).unwrap();
    }

    #[test]
    fn the_manifest_version_is_the_integer_2() {
        let err = refusal("spin_manifest_version = 2", "spin_manifest_version = \"2\"");
        assert!(err.contains("spin_manifest_version"), "{err}");
        let no_triggers = MINIMAL
            .split("[[trigger.http]]")
            .next()
            .unwrap()
            .to_string()
            + "[component.c]\nsource = \"c.wasm\"\n";
        assert!(parse(&no_triggers).is_err(), "Spin requires `trigger`");
    }

    #[test]
    fn trigger_keys_spin_would_act_on_are_refused() {
        for (to, what) in [
            ("route = \"/x/...\"\nexecutor = { type = \"wagi\" }", "wagi"),
            ("route = \"/x/...\"\nexecutor = \"http\"", "executor"),
            (
                "route = \"/x/...\"\nstatic_response = { body = \"hi\" }",
                "static_response",
            ),
        ] {
            let err = refusal("route = \"/x/...\"", to);
            assert!(err.contains(what), "{what}: {err}");
        }
        for route in [
            "{ private = false }",
            "{ }",
            "{ private = true, x = 1 }",
            "true",
        ] {
            let err = refusal("route = { private = true }", &format!("route = {route}"));
            assert!(err.contains("private = true"), "{route}: {err}");
        }
    }

    #[test]
    fn a_base_other_than_the_root_is_refused() {
        let with = |settings: &str| {
            parse(&MINIMAL.replace(
                "version = \"1.0.0\"",
                &format!("version = \"1.0.0\"\n[application.trigger.http]\n{settings}"),
            ))
        };
        with("base = \"/\"").unwrap();
        let err = format!("{:#}", with("base = \"/api\"").unwrap_err());
        assert!(err.contains("base"), "{err}");
        let err = format!("{:#}", with("bsae = \"/\"").unwrap_err());
        assert!(err.contains("bsae"), "{err}");
    }

    #[test]
    fn components_spin_features_we_lack_are_refused() {
        for (key, value) in [
            ("allowed_http_hosts", "[\"example.com\"]"),
            ("sqlite_databases", "[\"default\"]"),
            ("ai_models", "[\"llama2-chat\"]"),
            ("dependencies", "{ \"a:b/c\" = \"1.0.0\" }"),
        ] {
            let err = refusal(
                "source = \"c.wasm\"",
                &format!("source = \"c.wasm\"\n{key} = {value}"),
            );
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = refusal(
            "source = \"c.wasm\"",
            "source = { url = \"https://x/c.wasm\", digest = \"sha256:0\" }",
        );
        assert!(err.contains("source"), "{err}");
    }

    #[test]
    fn ids_and_labels_follow_spin() {
        for bad in ["my_comp", "My-comp", "-c", "c-", "1c", "c--d", "c.d"] {
            let text = MINIMAL
                .replace("component = \"c\"", &format!("component = \"{bad}\""))
                .replace("[component.c]", &format!("[component.\"{bad}\"]"))
                .replace("[component.c.", &format!("[component.\"{bad}\"."));
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains("component id"), "{bad}: {err}");
        }
        for good in ["my-comp", "MY-comp", "c2", "a-b2-c"] {
            let text = MINIMAL
                .replace("component = \"c\"", &format!("component = \"{good}\""))
                .replace("[component.c]", &format!("[component.\"{good}\"]"))
                .replace("[component.c.", &format!("[component.\"{good}\"."));
            parse(&text).unwrap_or_else(|e| panic!("{good}: {e:#}"));
        }
        refusal("[\"default\"]", "[\"a b\"]");
        refusal("[\"default\"]", "[\"a-b_c\"]");
        parse(&MINIMAL.replace("[\"default\"]", "[\"my_store\"]")).unwrap();
    }

    #[test]
    fn variable_names_follow_spin() {
        assert!(is_variable_name("db_url"));
        assert!(is_variable_name("a1"));
        for bad in ["DB_URL", "1x", "", "a-b", "a__b", "a_", "_a", "a_1"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
        let err = refusal("a = { default", "a__b = { default");
        assert!(err.contains("a__b"), "{err}");
        let err = refusal("v = \"{{ a }}\"", "v_ = \"{{ a }}\"");
        assert!(err.contains("v_"), "{err}");
    }

    #[test]
    fn templates_are_checked_for_every_component() {
        let err = refusal("v = \"{{ a }}\"", "v = \"{{ nope }}\"");
        assert!(err.contains("nope"), "{err}");
        let err = refusal("v = \"{{ a }}\"", "v = \"{{ a \"");
        assert!(err.contains("malformed"), "{err}");
        parse(&MINIMAL.replace("v = \"{{ a }}\"", "v = \"{\\\"x\\\":{}}\"")).unwrap();
        // No trigger routes to `d`: it is checked all the same.
        let unrouted = format!(
            "{MINIMAL}[component.d]\nsource = \"d.wasm\"\nvariables = {{ w = \"{{{{ zz }}}}\" }}\n"
        );
        assert!(parse(&unrouted).is_err());
    }

    #[test]
    fn allowed_outbound_hosts_are_checked_at_load() {
        let err = refusal("[\"postgres://{{ h }}\"]", "[\"postgres://db:5432-5440\"]");
        assert!(err.contains("allowed_outbound_hosts"), "{err}");
        // With the defaults, `postgres://{{ h }}` would have a path.
        let err = refusal(
            "h = { default = \"db:5432\" }",
            "h = { default = \"db/x\" }",
        );
        assert!(err.contains("allowed_outbound_hosts"), "{err}");
        refusal("[\"postgres://{{ h }}\"]", "[\"postgres://{{ h \"]");
        // A required variable has no default: the entry is checked when the host starts.
        parse(&MINIMAL.replace("postgres://{{ h }}", "postgres://{{ b }}")).unwrap();
    }
}

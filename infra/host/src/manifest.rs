//! The application manifest: the subset of Spin's `spin.toml` (manifest version 2)
//! that Toaster's host serves. Unknown keys are ignored, as Spin ignores keys of
//! triggers it doesn't run; anything we would have to get wrong silently (a
//! component source that is a URL, `files`, non-HTTP triggers) is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct BuildDecl {
    pub command: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<RawTrigger>>,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
}

#[derive(Deserialize)]
struct RawTrigger {
    route: toml::Value,
    component: toml::Value,
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
            toml::Value::String(s) if s == "2" => {}
            other => bail!("spin_manifest_version must be 2 (found {other})"),
        }
        for (name, var) in &raw.variables {
            if !is_variable_name(name) {
                bail!(
                    "variable name {name:?} must be lowercase letters, digits and underscores, starting with a letter"
                );
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
            for t in triggers {
                let component = match t.component {
                    toml::Value::String(s) => s,
                    _ => bail!(
                        "inline trigger components are not supported; name a [component.<id>]"
                    ),
                };
                if !raw.component.contains_key(&component) {
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
                        routes.push(HttpTrigger { route, component });
                    }
                    // `{ private = true }`: reachable only by service chaining, which we don't offer.
                    toml::Value::Table(_) => {}
                    other => bail!("invalid route {other}"),
                }
            }
        }
        for (id, c) in &raw.component {
            if !c.files.is_empty() {
                bail!("component {id:?}: `files` are not supported by the toaster host");
            }
            if c.source.contains("://") {
                bail!("component {id:?}: only local `source` paths are supported");
            }
            for k in c.variables.keys() {
                if !is_variable_name(k) {
                    bail!("component {id:?}: invalid variable name {k:?}");
                }
            }
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

/// Spin's rule for variable names: lowercase ASCII letters, digits and `_`, starting with a letter.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
a = { default = "x" }
b = { required = true, secret = true }
[[trigger.http]]
route = "/x/..."
component = "c"
[[trigger.http]]
route = { private = true }
component = "c"
[component.c]
source = "c.wasm"
key_value_stores = ["default"]
[component.c.variables]
v = "{{ a }}"
[component.c.build]
command = "true"
"#;

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
    fn refuses_what_it_cannot_serve_faithfully() {
        let bad = MINIMAL.replace("spin_manifest_version = 2", "spin_manifest_version = 1");
        assert!(Manifest::parse(&bad, PathBuf::new()).is_err());
        let bad = MINIMAL.replace("component = \"c\"\n[[", "component = \"nope\"\n[[");
        assert!(Manifest::parse(&bad, PathBuf::new()).is_err());
        let bad = MINIMAL.replace("{ default = \"x\" }", "{ }");
        assert!(Manifest::parse(&bad, PathBuf::new()).is_err());
        let bad = MINIMAL.replace(
            "source = \"c.wasm\"",
            "source = \"c.wasm\"\nfiles = [\"x\"]",
        );
        assert!(Manifest::parse(&bad, PathBuf::new()).is_err());
    }

    #[test]
    fn variable_names_follow_spin() {
        assert!(is_variable_name("db_url"));
        assert!(!is_variable_name("DB_URL"));
        assert!(!is_variable_name("1x"));
        assert!(!is_variable_name(""));
        assert!(!is_variable_name("a-b"));
    }
}

//! Application variables and the `fermyon:spin/variables@2.0.0` interface.
//!
//! Variables are resolved once, at start: explicit overrides (`--variable`) win over
//! `SPIN_VARIABLE_<NAME>` environment variables, which win over manifest defaults.
//! A required variable with no value stops the host before it serves anything, so a
//! misconfiguration never surfaces as a failing request. Component variables are
//! templates over application variables (`"{{ db_url }}"`), rendered at start too.
//!
//! Templates are read as Spin reads them: `{{` opens an expression that the next `}}`
//! closes, its text (trimmed) must name an application variable, and a `}}` outside
//! an expression is plain text.
//!
//! `toaster up` also checks the values, before it builds or starts anything
//! ([`check_values`]): every variable of Toaster's app (`toaster_core::config`), an
//! application variable by its name and a component variable by the name the component
//! reads, is parsed as the component will parse it, and a bad value stops the host
//! with one line naming the variable, what it accepts and where the value came from.
//! [`Variables::resolve`] (the library's `start`) does not: it serves what it is
//! given, as Spin does, so the tests can see what a component does with a bad value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::bindings::variables::{self, Error};
use crate::manifest::{Manifest, VariableDecl};
use crate::template::{TemplateError, render_with};

#[derive(Debug, thiserror::Error)]
pub enum VariablesError {
    #[error(
        "required variable(s) not set: {}. Set each with `--variable NAME=VALUE` or the environment variable SPIN_VARIABLE_<NAME>",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    /// A template that is malformed or names no application variable.
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{}", undeclared_message(.name, .declared))]
    Undeclared { name: String, declared: Vec<String> },
    /// Values that do not parse, one line each ([`check_values`]).
    #[error("{}", invalid_message(.0))]
    Invalid(Vec<String>),
}

fn undeclared_message(name: &str, declared: &[String]) -> String {
    let mut message = format!("--variable {name}: the manifest declares no variable {name:?}");
    if let Some(close) = closest(name, declared) {
        message.push_str(&format!("; did you mean {close}?"));
    }
    if declared.is_empty() {
        message.push_str(" (its [variables] is empty)");
    } else {
        message.push_str(&format!(" (it declares {})", declared.join(", ")));
    }
    message
}

fn invalid_message(lines: &[String]) -> String {
    match lines {
        [one] => one.clone(),
        many => format!(
            "{} variables are invalid:\n  {}",
            many.len(),
            many.join("\n  ")
        ),
    }
}

/// The declared name `name` was most likely meant to be: the same ignoring case, or
/// at most two edits away.
fn closest<'a>(name: &str, declared: &'a [String]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    declared
        .iter()
        .map(|d| (edit_distance(&lower, d), d))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, d)| d.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `--variable` names the manifest does not declare: the first, as an error.
pub fn check_declared<'a>(
    decls: &BTreeMap<String, VariableDecl>,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), VariablesError> {
    match names.into_iter().find(|k| !decls.contains_key(*k)) {
        Some(name) => Err(VariablesError::Undeclared {
            name: name.clone(),
            declared: decls.keys().cloned().collect(),
        }),
        None => Ok(()),
    }
}

/// Checks the values an app's components will read, before anything is started:
/// every `--variable` name is declared; every required variable has a value, but those
/// in `supplied` (which the caller provides itself later: `toaster up`'s local
/// PostgreSQL and signing keys); and every value of a variable `toaster_core::config`
/// knows parses. `overrides` are the values given on the command line, `origin` says
/// how each was given (default `--variable`), `env` reads the environment.
pub fn check_values(
    manifest: &Manifest,
    overrides: &BTreeMap<String, String>,
    origin: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
    supplied: &BTreeSet<String>,
) -> Result<(), VariablesError> {
    check_declared(&manifest.variables, overrides.keys())?;
    let mut values: BTreeMap<&str, (String, String)> = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, decl) in &manifest.variables {
        let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        let given = match (overrides.get(name), env(&env_name), &decl.default) {
            (Some(v), _, _) => Some((
                v.clone(),
                origin
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "--variable".to_owned()),
            )),
            (None, Some(v), _) => Some((v, env_name)),
            (None, None, Some(_)) if supplied.contains(name) => None,
            (None, None, Some(v)) => Some((v.clone(), "the manifest's default".to_owned())),
            (None, None, None) if supplied.contains(name) => None,
            (None, None, None) => {
                missing.push(name.clone());
                None
            }
        };
        if let Some(given) = given {
            values.insert(name, given);
        }
    }
    if !missing.is_empty() {
        return Err(VariablesError::Missing(missing));
    }
    let mut bad = Vec::new();
    for (name, (value, from)) in &values {
        if let Some(spec) = toaster_core::config::variable(name)
            && let Err(message) = spec.check(value)
        {
            bad.push(format!("{message} (from {from})"));
        }
    }
    // A component variable is checked by the name the component reads, when it is not
    // simply the application variable of that name (checked above).
    for (id, component) in &manifest.components {
        for (name, template) in &component.variables {
            let Some(spec) = toaster_core::config::variable(name) else {
                continue;
            };
            // A reference to a value supplied later: checked when served.
            let Ok(value) = render_with(template, |r| values.get(r).map(|(v, _)| v.as_str()))
            else {
                continue;
            };
            if values.get(name.as_str()).is_some_and(|(v, _)| *v == value) {
                continue;
            }
            if let Err(reason) = spec.kind.check(&value) {
                let shown = spec.invalid(&value, &reason);
                bad.push(format!(
                    "component {id}: {shown} (its template is {template:?})"
                ));
            }
        }
    }
    if let (Some((url, _)), Some((host, host_from))) = (values.get("db_url"), values.get("db_host"))
        && let Some(expected) = db_host_of(url)
        && !same_host_port(host, &expected)
    {
        bad.push(format!(
            "variable db_host = {host:?} (from {host_from}) does not name db_url's host and port, \
             {expected}: the components may reach only db_host's database, so every query \
             would be refused. Set db_host to {expected}, or leave it out and toaster up \
             derives it from db_url"
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(VariablesError::Invalid(bad))
    }
}

/// `host:port` of a PostgreSQL URL with a single TCP host (port 5432 if not given).
pub fn db_host_of(url: &str) -> Option<String> {
    let config = url.parse::<tokio_postgres::Config>().ok()?;
    match (config.get_hosts(), config.get_ports()) {
        ([tokio_postgres::config::Host::Tcp(host)], ports) if ports.len() <= 1 => {
            let port = ports.first().copied().unwrap_or(5432);
            if host.contains(':') {
                Some(format!("[{host}]:{port}"))
            } else {
                Some(format!("{host}:{port}"))
            }
        }
        _ => None,
    }
}

fn same_host_port(given: &str, expected: &str) -> bool {
    let given = if given
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        && !given.ends_with(']')
    {
        given.to_owned()
    } else {
        format!("{given}:5432")
    };
    given.eq_ignore_ascii_case(expected)
}

/// Resolved application variables. Secret values are never printed by `Debug`.
#[derive(Clone, Default)]
pub struct Variables {
    values: BTreeMap<String, String>,
    secret: BTreeSet<String>,
}

impl std::fmt::Debug for Variables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if self.secret.contains(k) {
                m.entry(k, &"<secret>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl Variables {
    pub fn resolve(
        decls: &BTreeMap<String, VariableDecl>,
        overrides: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Variables, VariablesError> {
        check_declared(decls, overrides.keys())?;
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        let mut secret = BTreeSet::new();
        for (name, decl) in decls {
            if decl.secret {
                secret.insert(name.clone());
            }
            let value = overrides
                .get(name)
                .cloned()
                .or_else(|| env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())))
                .or_else(|| decl.default.clone());
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(VariablesError::Missing(missing));
        }
        Ok(Variables { values, secret })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Renders a manifest expression such as `postgres://{{ db_host }}`.
    pub fn render(&self, template: &str) -> Result<String, VariablesError> {
        Ok(render_with(template, |name| {
            self.values.get(name).map(String::as_str)
        })?)
    }

    /// Renders a component's `[component.x.variables]` table.
    pub fn render_all(
        &self,
        templates: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VariablesError> {
        templates
            .iter()
            .map(|(k, t)| Ok((k.clone(), self.render(t)?)))
            .collect()
    }
}

/// Spin's rule for a name a component asks for (`spin_expressions::Key`): lowercase
/// ASCII letters, digits and single underscores, starting with a letter and ending
/// with a letter or digit. The reason, worded as Spin words it, when it is not.
pub fn check_key(key: &str) -> Result<(), String> {
    let reason = if key.is_empty() {
        "must not be empty".to_string()
    } else if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!(
            "invalid character {c:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        )
    } else if !key.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase ASCII letter".to_string()
    } else if !key.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        "must end with a lowercase ASCII letter or digit".to_string()
    } else if key.contains("__") {
        "must not contain multiple consecutive underscores".to_string()
    } else {
        return Ok(());
    };
    Err(format!("{key:?}: {reason}"))
}

/// The interface's state in one instance: the component's rendered variables.
pub struct ComponentVariables {
    component: Arc<str>,
    values: Arc<BTreeMap<String, String>>,
}

impl ComponentVariables {
    pub fn new(component: Arc<str>, values: Arc<BTreeMap<String, String>>) -> Self {
        ComponentVariables { component, values }
    }
}

impl variables::Host for ComponentVariables {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        if let Err(reason) = check_key(&name) {
            return Ok(Err(Error::InvalidName(reason)));
        }
        Ok(match self.values.get(&name) {
            Some(v) => Ok(v.clone()),
            None => Err(Error::Undefined(format!(
                "no variable for {:?}.{name:?}",
                &*self.component
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::template_references;

    fn decls() -> BTreeMap<String, VariableDecl> {
        let mut d = BTreeMap::new();
        d.insert(
            "host".into(),
            VariableDecl {
                default: Some("localhost".into()),
                ..Default::default()
            },
        );
        d.insert(
            "key".into(),
            VariableDecl {
                required: true,
                secret: true,
                ..Default::default()
            },
        );
        d
    }

    #[test]
    fn precedence_is_flag_then_env_then_default() {
        let env = |k: &str| match k {
            "SPIN_VARIABLE_KEY" => Some("from-env".to_string()),
            "SPIN_VARIABLE_HOST" => Some("env-host".to_string()),
            _ => None,
        };
        let v = Variables::resolve(&decls(), &BTreeMap::new(), env).unwrap();
        assert_eq!(v.get("key"), Some("from-env"));
        assert_eq!(v.get("host"), Some("env-host"));
        let flags = BTreeMap::from([("key".to_string(), "from-flag".to_string())]);
        let v = Variables::resolve(&decls(), &flags, env).unwrap();
        assert_eq!(v.get("key"), Some("from-flag"));
        let v = Variables::resolve(&decls(), &flags, |_| None).unwrap();
        assert_eq!(v.get("host"), Some("localhost"));
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let err = Variables::resolve(&decls(), &BTreeMap::new(), |_| None).unwrap_err();
        assert!(err.to_string().contains("key"), "{err}");
        assert!(err.to_string().contains("SPIN_VARIABLE_"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let flags = BTreeMap::from([("key".to_string(), "hunter2".to_string())]);
        let v = Variables::resolve(&decls(), &flags, |_| None).unwrap();
        assert!(!format!("{v:?}").contains("hunter2"));
    }

    #[test]
    fn templates_render_and_fail_loudly() {
        let flags = BTreeMap::from([("key".to_string(), "k".to_string())]);
        let v = Variables::resolve(&decls(), &flags, |_| None).unwrap();
        assert_eq!(
            v.render("pg://{{ host }}:5432/{{key}}").unwrap(),
            "pg://localhost:5432/k"
        );
        assert_eq!(v.render("plain").unwrap(), "plain");
        assert!(matches!(
            v.render("{{ nope }}"),
            Err(VariablesError::Template(TemplateError::Unknown { .. }))
        ));
        assert!(matches!(
            v.render("{{ host "),
            Err(VariablesError::Template(TemplateError::Malformed(_)))
        ));
        assert!(matches!(
            v.render("{{ host }} {{ key"),
            Err(VariablesError::Template(TemplateError::Malformed(_)))
        ));
        let undeclared = BTreeMap::from([("zzz".to_string(), "1".to_string())]);
        assert!(Variables::resolve(&decls(), &undeclared, |_| None).is_err());
    }

    #[test]
    fn a_stray_closing_brace_pair_is_text_as_in_spin() {
        let flags = BTreeMap::from([("key".to_string(), "k".to_string())]);
        let v = Variables::resolve(&decls(), &flags, |_| None).unwrap();
        assert_eq!(v.render("x }}").unwrap(), "x }}");
        assert_eq!(
            v.render(r#"{"a":{"b":"{{ key }}"}}"#).unwrap(),
            r#"{"a":{"b":"k"}}"#
        );
        assert_eq!(v.render("{{key}}}").unwrap(), "k}");
        // The expression runs to the first `}}`: `{{ {{ key }}` names "{{ key".
        assert!(matches!(
            v.render("{{ {{ key }}"),
            Err(VariablesError::Template(TemplateError::Unknown { name, .. })) if name == "{{ key"
        ));
        assert_eq!(template_references("a{{ x }}b{{y}}").unwrap(), ["x", "y"]);
    }

    fn app(component_variables: &str) -> Manifest {
        let text = format!(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
db_url = {{ required = true, secret = true }}
db_host = {{ default = "127.0.0.1:5432" }}
limit = {{ default = "600/60s" }}
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
[component.c.variables]
{component_variables}
"#
        );
        Manifest::parse(&text, ".".into()).unwrap()
    }

    fn check(manifest: &Manifest, flags: &[(&str, &str)]) -> Result<(), VariablesError> {
        let flags = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let supplied = BTreeSet::from(["db_url".to_string()]);
        check_values(manifest, &flags, &BTreeMap::new(), |_| None, &supplied)
    }

    #[test]
    fn values_are_checked_by_the_name_the_component_reads() {
        let m = app(r#"device_rate_limit = "{{ limit }}""#);
        assert!(check(&m, &[]).is_ok());
        let err = check(&m, &[("limit", "lots")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "component c: variable device_rate_limit = \"lots\" is invalid: it takes \
             <requests>/<seconds>s, such as 600/60s (its template is \"{{ limit }}\")"
        );
        // Application variables Toaster knows are checked by their own name; a value
        // supplied later (db_url here) is not checked yet, nor what refers to it.
        let m = app(r#"db_url = "{{ db_url }}""#);
        assert!(check(&m, &[]).is_ok());
        let err = check(&m, &[("db_host", "db:x")]).unwrap_err().to_string();
        assert!(
            err.starts_with("variable db_host = \"db:x\" is invalid"),
            "{err}"
        );
        let err = check(&m, &[("db_url", "postgres://u@db:5433/x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("db_url's host and port, db:5433"), "{err}");
        assert!(
            check(
                &m,
                &[("db_url", "postgres://u@db:5433/x"), ("db_host", "db:5433")]
            )
            .is_ok()
        );
    }

    #[test]
    fn unknown_and_missing_names_are_refused() {
        let m = app("");
        let err = check(&m, &[("limt", "1/1s")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "--variable limt: the manifest declares no variable \"limt\"; did you mean \
             limit? (it declares db_host, db_url, limit)"
        );
        let none = BTreeSet::new();
        let err = check_values(&m, &BTreeMap::new(), &BTreeMap::new(), |_| None, &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("required variable(s) not set: db_url."),
            "{err}"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("DB_URL", &["db_url".into()]), Some("db_url"));
        assert_eq!(closest("zzzzzz", &["db_url".into()]), None);
    }

    #[test]
    fn db_host_is_derived_as_host_and_port() {
        assert_eq!(
            db_host_of("postgres://u@db:5433/x").as_deref(),
            Some("db:5433")
        );
        assert_eq!(db_host_of("postgres://u@db/x").as_deref(), Some("db:5432"));
        assert_eq!(
            db_host_of("postgres://u@[::1]:1/x").as_deref(),
            Some("[::1]:1")
        );
        assert_eq!(db_host_of("postgres://u@a,b/x"), None);
        assert!(same_host_port("db", "db:5432"));
        assert!(same_host_port("[::1]", "[::1]:5432"));
        assert!(!same_host_port("db:5433", "db:5432"));
    }

    #[test]
    fn names_components_ask_for_follow_spin_keys() {
        for ok in ["db_url", "a", "a1", "a_1", "x9_y"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("DB_URL", "invalid character"),
            ("a-b", "invalid character"),
            ("1x", "start"),
            ("_x", "start"),
            ("x_", "end"),
            ("a__b", "consecutive"),
        ] {
            let err = check_key(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}

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

use std::collections::{BTreeMap, BTreeSet};

use crate::bindings::variables::{self, Error};
use crate::manifest::VariableDecl;
use crate::state::HostState;

#[derive(Debug, thiserror::Error)]
pub enum VariablesError {
    #[error(
        "required variable(s) not set: {}. Set each with `--variable NAME=VALUE` or the environment variable SPIN_VARIABLE_<NAME>",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    #[error("`{template}` refers to {name:?}, which is not an application variable")]
    Unknown { template: String, name: String },
    #[error("malformed template `{0}`: a `{{{{` is not closed by `}}}}`")]
    Malformed(String),
    #[error("--variable {0:?} is not declared in the manifest's [variables]")]
    Undeclared(String),
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
        if let Some(name) = overrides.keys().find(|k| !decls.contains_key(*k)) {
            return Err(VariablesError::Undeclared(name.clone()));
        }
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
        render_with(template, |name| self.values.get(name).map(String::as_str))
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

/// One piece of a template: literal text, or the (trimmed) text of a `{{ ... }}`.
enum Part<'a> {
    Lit(&'a str),
    Expr(&'a str),
}

fn parse_template(template: &str) -> Result<Vec<Part<'_>>, VariablesError> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix("{{") {
            let (expr, after) = inner
                .split_once("}}")
                .ok_or_else(|| VariablesError::Malformed(template.to_string()))?;
            parts.push(Part::Expr(expr.trim()));
            rest = after;
        } else {
            let end = rest.find("{{").unwrap_or(rest.len());
            parts.push(Part::Lit(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(parts)
}

/// The application variables `template` refers to, in order; an error if it is malformed.
pub fn template_references(template: &str) -> Result<Vec<&str>, VariablesError> {
    Ok(parse_template(template)?
        .into_iter()
        .filter_map(|p| match p {
            Part::Expr(name) => Some(name),
            Part::Lit(_) => None,
        })
        .collect())
}

/// Renders `template`, looking each expression up with `value`.
pub fn render_with<'v>(
    template: &str,
    value: impl Fn(&str) -> Option<&'v str>,
) -> Result<String, VariablesError> {
    let mut out = String::with_capacity(template.len());
    for part in parse_template(template)? {
        match part {
            Part::Lit(text) => out.push_str(text),
            Part::Expr(name) => {
                out.push_str(value(name).ok_or_else(|| VariablesError::Unknown {
                    template: template.to_string(),
                    name: name.to_string(),
                })?)
            }
        }
    }
    Ok(out)
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

impl variables::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        if let Err(reason) = check_key(&name) {
            return Ok(Err(Error::InvalidName(reason)));
        }
        Ok(match self.component.variables.get(&name) {
            Some(v) => Ok(v.clone()),
            None => Err(Error::Undefined(format!(
                "no variable for {:?}.{name:?}",
                self.component.id
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(VariablesError::Unknown { .. })
        ));
        assert!(matches!(
            v.render("{{ host "),
            Err(VariablesError::Malformed(_))
        ));
        assert!(matches!(
            v.render("{{ host }} {{ key"),
            Err(VariablesError::Malformed(_))
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
            Err(VariablesError::Unknown { name, .. }) if name == "{{ key"
        ));
        assert_eq!(template_references("a{{ x }}b{{y}}").unwrap(), ["x", "y"]);
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

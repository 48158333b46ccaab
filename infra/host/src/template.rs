//! Spin's template expressions, as in `"{{ db_url }}"` or `postgres://{{ db_host }}`:
//! `{{` opens an expression that the next `}}` closes, its text (trimmed) names an
//! application variable, and a `}}` outside an expression is plain text. The manifest
//! checks them at load ([`crate::manifest`]); [`crate::variables`] renders them.

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("`{template}` refers to {name:?}, which is not an application variable")]
    Unknown { template: String, name: String },
    #[error("malformed template `{0}`: a `{{{{` is not closed by `}}}}`")]
    Malformed(String),
}

/// One piece of a template: literal text, or the (trimmed) text of a `{{ ... }}`.
enum Part<'a> {
    Lit(&'a str),
    Expr(&'a str),
}

fn parse_template(template: &str) -> Result<Vec<Part<'_>>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix("{{") {
            let (expr, after) = inner
                .split_once("}}")
                .ok_or_else(|| TemplateError::Malformed(template.to_string()))?;
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
pub fn template_references(template: &str) -> Result<Vec<&str>, TemplateError> {
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
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for part in parse_template(template)? {
        match part {
            Part::Lit(text) => out.push_str(text),
            Part::Expr(name) => {
                out.push_str(value(name).ok_or_else(|| TemplateError::Unknown {
                    template: template.to_string(),
                    name: name.to_string(),
                })?)
            }
        }
    }
    Ok(out)
}

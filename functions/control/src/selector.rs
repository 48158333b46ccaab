//! Which devices a fleet-wide write reaches: the device list's filters (`model`,
//! `channel`, `tag`), and `all=true` to mean every device of the tenant. A selector
//! with none of them is refused, so a forgotten filter never reaches a whole fleet.
//! Decommissioned devices are never selected.

use serde_json::{Value, json};
use toaster_core::ids::{Channel, Model, Tag};
use toaster_core::problem::Problem;
use toaster_platform::db::{self, Param};
use toaster_platform::query::Query;

/// The filters, each optional; at least one given, or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub model: Option<Model>,
    pub channel: Option<Channel>,
    pub tag: Option<Tag>,
}

impl Selector {
    /// Takes the selector's parameters from `query` (the caller finishes it).
    pub fn take(query: &mut Query) -> Result<Selector, Problem> {
        let model = query.take_parsed("model", Model::parse)?;
        let channel = query.take_parsed("channel", Channel::parse)?;
        let tag = query.take_parsed("tag", Tag::parse)?;
        let all = query.take_bool("all")?;
        let selector = Selector {
            model,
            channel,
            tag,
        };
        match (selector.is_empty(), all) {
            (true, false) => Err(Problem::bad_request(
                "name the devices with model, channel or tag, or ask for all=true",
            )),
            (false, true) => Err(Problem::bad_request(
                "all=true selects every device: give it without model, channel or tag",
            )),
            _ => Ok(selector),
        }
    }

    fn is_empty(&self) -> bool {
        self.model.is_none() && self.channel.is_none() && self.tag.is_none()
    }

    /// The condition on `devices d`, with its parameters numbered from `first`:
    /// `(sql, params)`.
    pub fn sql(&self, first: usize) -> (String, Vec<Param>) {
        let (m, c, t) = (first, first + 1, first + 2);
        (
            format!(
                "d.status <> 'decommissioned' \
                 AND (${m}::text IS NULL OR d.model = ${m}) \
                 AND (${c}::text IS NULL OR d.channel = ${c}) \
                 AND (${t}::text IS NULL OR d.tags @> ARRAY[${t}::text])"
            ),
            vec![
                db::opt_text(self.model.as_ref().map(ToString::to_string)),
                db::opt_text(self.channel.as_ref().map(ToString::to_string)),
                db::opt_text(self.tag.as_ref().map(ToString::to_string)),
            ],
        )
    }

    /// For the audit entry and the answer.
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(m) = &self.model {
            out.insert("model".into(), json!(m.to_string()));
        }
        if let Some(c) = &self.channel {
            out.insert("channel".into(), json!(c.to_string()));
        }
        if let Some(t) = &self.tag {
            out.insert("tag".into(), json!(t.to_string()));
        }
        if out.is_empty() {
            out.insert("all".into(), json!(true));
        }
        Value::Object(out)
    }
}

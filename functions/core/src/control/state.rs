//! A device's state documents: `desired` (written by its tenant's admins) and
//! `reported` (written by the device), each a JSON object changed by JSON Merge Patch
//! (RFC 7386, the `json-patch` crate's `merge`), with the limits that keep a document
//! small enough for the key-value store, and the `delta` a device still has to act on.
//!
//! Pure functions over values; the component reads and writes the documents in one
//! transaction around [`apply`] (docs/control.md).

use serde_json::{Map, Value};
use thiserror::Error;

/// The limits of one document, set by deployment variables (`state_max_bytes`,
/// `state_max_depth`, `state_max_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest document, as compact JSON, in bytes.
    pub max_bytes: usize,
    /// The deepest nesting of objects and arrays; the document itself is depth 1.
    pub max_depth: usize,
    /// The most members of any one object in the document or the patch.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024,
            max_depth: 8,
            max_keys: 256,
        }
    }
}

/// Why a patch was refused. Each names the limit or rule, for a 413 or 422.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    #[error("a state patch must be a JSON object (RFC 7386 merge patch)")]
    NotAnObject,
    #[error("the patch nests deeper than {max} levels (state_max_depth)")]
    TooDeep { max: usize },
    #[error("an object of the patch has more than {max} members (state_max_keys)")]
    TooManyKeys { max: usize },
    #[error("the document would be {size} bytes, over the limit of {max} (state_max_bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("a member name is empty or longer than 128 characters")]
    BadKey,
}

impl StateError {
    /// Whether the refusal is about size (413) rather than shape (422).
    pub fn is_size(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}

/// The outcome of a patch that passed every limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The document after the patch.
    pub document: Map<String, Value>,
    /// The top-level members whose value changed (added, replaced or deleted), sorted.
    /// Empty when the patch changed nothing: then the version does not grow.
    pub changed: Vec<String>,
}

/// Checks `patch` against the limits (shape only: the size is checked on the result).
pub fn check_patch(patch: &Value, limits: &Limits) -> Result<(), StateError> {
    if !patch.is_object() {
        return Err(StateError::NotAnObject);
    }
    check_value(patch, 1, limits)
}

/// Checks any JSON value (a command's parameters or output) against the depth and
/// members limits; the value itself is depth 1.
pub fn check_json(value: &Value, limits: &Limits) -> Result<(), StateError> {
    check_value(value, 1, limits)
}

fn check_value(value: &Value, depth: usize, limits: &Limits) -> Result<(), StateError> {
    match value {
        Value::Object(map) => {
            if depth > limits.max_depth {
                return Err(StateError::TooDeep {
                    max: limits.max_depth,
                });
            }
            if map.len() > limits.max_keys {
                return Err(StateError::TooManyKeys {
                    max: limits.max_keys,
                });
            }
            for (key, member) in map {
                if key.is_empty() || key.chars().count() > 128 {
                    return Err(StateError::BadKey);
                }
                check_value(member, depth + 1, limits)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            if depth > limits.max_depth {
                return Err(StateError::TooDeep {
                    max: limits.max_depth,
                });
            }
            items
                .iter()
                .try_for_each(|item| check_value(item, depth + 1, limits))
        }
        _ => Ok(()),
    }
}

/// Applies `patch` to `document` (RFC 7386: `null` deletes a member, an object merges,
/// anything else replaces), within the limits. Nothing is changed on refusal.
pub fn apply(
    document: &Map<String, Value>,
    patch: &Value,
    limits: &Limits,
) -> Result<Applied, StateError> {
    check_patch(patch, limits)?;
    let mut merged = Value::Object(document.clone());
    json_patch::merge(&mut merged, patch);
    let Value::Object(merged) = merged else {
        unreachable!("a merge patch that is an object leaves an object");
    };
    // The result within the limits too: a patch can add members to an object that
    // already had many, or deepen a document.
    check_value(&Value::Object(merged.clone()), 1, limits)?;
    let size = serde_json::to_vec(&merged).map_or(usize::MAX, |bytes| bytes.len());
    if size > limits.max_bytes {
        return Err(StateError::TooLarge {
            size,
            max: limits.max_bytes,
        });
    }
    let mut changed: Vec<String> = document
        .keys()
        .chain(merged.keys())
        .filter(|key| document.get(*key) != merged.get(*key))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    Ok(Applied {
        document: merged,
        changed,
    })
}

/// What the device still has to do: the members of `desired` whose value differs from
/// `reported`, recursively for objects on both sides (so a change deep inside a
/// member shows only that change), as AWS IoT's shadow delta does. A member only in
/// `reported` is not in the delta: the device may report more than it is asked.
pub fn delta(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, want) in desired {
        match (want, reported.get(key)) {
            (Value::Object(want), Some(Value::Object(have))) => {
                let inner = delta(want, have);
                if !inner.is_empty() {
                    out.insert(key.clone(), Value::Object(inner));
                }
            }
            (want, Some(have)) if same(want, have) => {}
            (want, _) => {
                out.insert(key.clone(), want.clone());
            }
        }
    }
    out
}

/// Equal as JSON values, numbers by value (`1` and `1.0` are the same set point).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, value)| y.get(key).is_some_and(|other| same(value, other)))
        }
        _ => a == b,
    }
}

/// The entity tag of a device's view of its state: both versions, so either
/// document's change makes a new tag (RFC 9110 strong validator, quoted).
pub fn etag(desired_version: i64, reported_version: i64) -> String {
    format!("\"d{desired_version}.r{reported_version}\"")
}

/// Whether an `If-None-Match` header value matches `etag` (a list, or `*`).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

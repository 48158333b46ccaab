//! What the commands print on stdout: `--output json`, the API's JSON as it came
//! (pretty-printed), for scripts and `jq`; or `--output table` (the default), aligned
//! columns for lists and `KEY  VALUE` lines for one object, for people.
//!
//! Tables show server text on one line ([`super::client::one_line`]): an answer
//! cannot break the layout or send escape sequences to the terminal.

use serde_json::Value;

use super::client::one_line;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (lists) or `KEY  VALUE` lines (one object).
    #[default]
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// One column of a list: its header and where its value is in each item (a JSON
/// pointer).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub pointer: &'static str,
}

pub const fn col(header: &'static str, pointer: &'static str) -> Column {
    Column { header, pointer }
}

/// `value` as pretty JSON, with a final newline.
pub fn json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// `items` as aligned columns under a header row.
pub fn table(items: &[Value], columns: &[Column]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|c| cell(item.pointer(c.pointer).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.header.to_owned()).collect();
    aligned(std::iter::once(headers).chain(rows).collect())
}

/// One object as `KEY  VALUE` lines, by field name.
pub fn record(value: &Value) -> String {
    match value {
        Value::Object(fields) => aligned(
            fields
                .iter()
                .map(|(key, value)| vec![key.clone(), cell(value)])
                .collect(),
        ),
        other => format!("{}\n", cell(other)),
    }
}

/// Rows padded so that columns line up; the last column is not padded.
fn aligned(rows: Vec<Vec<String>>) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// One value in a cell: `-` for null, strings as they are, lists of plain values
/// joined by commas, anything else as compact JSON.
pub fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            items.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    one_line(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_line_up_under_their_headers() {
        let items = [
            json!({"id": "d1", "status": "active", "tags": ["a=1", "b"], "n": 3}),
            json!({"id": "device-22", "status": "disabled", "tags": [], "n": null}),
        ];
        let columns = [
            col("ID", "/id"),
            col("STATUS", "/status"),
            col("TAGS", "/tags"),
            col("N", "/n"),
        ];
        assert_eq!(
            table(&items, &columns),
            "ID         STATUS    TAGS   N\n\
             d1         active    a=1,b  3\n\
             device-22  disabled  -      -\n"
        );
        assert_eq!(table(&[], &columns), "ID  STATUS  TAGS  N\n");
    }

    #[test]
    fn one_object_is_key_value_lines() {
        let text = record(&json!({"id": "acme", "keys": [{"state": "current"}], "name": "A\nB"}));
        assert_eq!(
            text,
            "id    acme\nkeys  [{\"state\":\"current\"}]\nname  A B\n"
        );
    }
}

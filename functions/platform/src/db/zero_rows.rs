//! The workaround for Spin 4.0.0–4.0.2's zero-row hang.
//!
//! On those versions the synchronous `query` of `spin:postgres/postgres` never returns
//! when a statement yields no rows (spinframework/spin#3671, fixed after 4.0.2): the
//! host waits for the column list, which it only learns from the first row, while the
//! row stream that would end the wait is still alive. A component sees a request that
//! never answers and a session left `idle in transaction`.
//!
//! So no statement [`super::Db::query`] sends may yield zero rows on the wire. [`wrap`]
//! rewrites a statement `S` into one that yields `S`'s rows, each behind a leading
//! marker column that is `true`, or, when `S` yields none, exactly one row whose marker
//! is NULL:
//!
//! ```sql
//! WITH <S's own CTEs,> toaster_q AS (<S's main statement>)
//! SELECT toaster_r.* FROM (VALUES (1)) AS toaster_one (z)
//! LEFT JOIN (SELECT true AS toaster_row, * FROM toaster_q) AS toaster_r ON true
//! ```
//!
//! and [`unwrap`] strips the marker again, so the component sees what `S` returned.
//! `S`'s own `WITH` list is spliced in front, not nested: PostgreSQL allows
//! data-modifying CTEs (`WITH x AS (DELETE … RETURNING …)`) only at the top level.
//! The join has no equality clause, so the planner can only run it as a nested loop
//! with the one-row `VALUES` outside: `S`'s rows come out in `S`'s order. Errors and
//! their SQLSTATEs are `S`'s (only a syntax error's position moves).
//!
//! The cost was measured (BENCHMARKS.md, "Spin compatibility") and it is on for every
//! query, on every host. Remove this module when no supported Spin has the bug
//! (docs/host.md, "Spin compatibility").

use spin_sdk::pg4::{DbValue, RowSet};

/// Names the wrapper introduces; no Toaster statement uses them.
const CTE: &str = "toaster_q";

/// `sql` rewritten to yield at least one row, behind a marker column (see the module).
pub fn wrap(sql: &str) -> String {
    let body = trim_end(sql);
    let (head, main) = split_with(body);
    let mut out = String::with_capacity(body.len() + 200);
    match head {
        Some(ctes) => {
            out.push_str(ctes);
            out.push_str(",\n");
        }
        None => out.push_str("WITH "),
    }
    out.push_str(CTE);
    out.push_str(" AS (\n");
    out.push_str(main);
    // A newline first: the statement may end in a `--` comment.
    out.push_str(
        "\n) SELECT toaster_r.* FROM (VALUES (1)) AS toaster_one (z) \
         LEFT JOIN (SELECT true AS toaster_row, * FROM toaster_q) AS toaster_r ON true",
    );
    out
}

/// The rows of the wrapped statement without the marker: none when the only row's
/// marker is NULL. A result without the marker column is returned unchanged.
pub fn unwrap(mut rows: RowSet) -> RowSet {
    let marked = rows
        .columns
        .first()
        .is_some_and(|c| c.name == "toaster_row");
    if !marked {
        return rows;
    }
    rows.columns.remove(0);
    if rows.rows.len() == 1 && matches!(rows.rows[0].first(), Some(DbValue::DbNull)) {
        rows.rows.clear();
        return rows;
    }
    for row in &mut rows.rows {
        if !row.is_empty() {
            row.remove(0);
        }
    }
    rows
}

/// `sql` without trailing whitespace and semicolons.
fn trim_end(sql: &str) -> &str {
    sql.trim_end_matches(|c: char| c.is_whitespace() || c == ';')
}

/// Splits a statement that starts with a `WITH` list into `WITH … <last CTE>` and the
/// main statement after it. A statement without one (or one this scanner does not
/// follow, such as a recursive CTE's `SEARCH` clause) is all main statement: nesting
/// it whole is still right unless it holds a data-modifying CTE.
fn split_with(sql: &str) -> (Option<&str>, &str) {
    let mut s = Scanner::new(sql);
    s.skip_blank();
    if !s.keyword("with") {
        return (None, sql);
    }
    s.skip_blank();
    s.keyword("recursive");
    loop {
        s.skip_blank();
        if !s.identifier() {
            return (None, sql);
        }
        s.skip_blank();
        if s.peek() == Some(b'(') && !s.parenthesized() {
            return (None, sql);
        }
        s.skip_blank();
        if !s.keyword("as") {
            return (None, sql);
        }
        s.skip_blank();
        if s.keyword("not") {
            s.skip_blank();
        }
        s.keyword("materialized");
        s.skip_blank();
        if !s.parenthesized() {
            return (None, sql);
        }
        let end = s.pos;
        s.skip_blank();
        if s.peek() == Some(b',') {
            s.pos += 1;
            continue;
        }
        return (Some(&sql[..end]), &sql[end..]);
    }
}

/// A forward scanner over SQL text that knows where literals and comments are.
struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(sql: &'a str) -> Self {
        Scanner {
            text: sql.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn at(&self, offset: usize) -> Option<u8> {
        self.text.get(self.pos + offset).copied()
    }

    /// Skips whitespace and comments (`--` to the end of the line, nested `/* */`).
    fn skip_blank(&mut self) {
        loop {
            match (self.peek(), self.at(1)) {
                (Some(c), _) if c.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                (Some(b'/'), Some(b'*')) => self.block_comment(),
                _ => return,
            }
        }
    }

    fn block_comment(&mut self) {
        let mut depth = 0usize;
        while self.pos < self.text.len() {
            match (self.peek(), self.at(1)) {
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    fn is_word_byte(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
    }

    /// Consumes `word` (ASCII, any case) when it stands as a whole word here.
    fn keyword(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        let matches = self
            .text
            .get(self.pos..end)
            .is_some_and(|w| w.eq_ignore_ascii_case(word.as_bytes()))
            && !self.text.get(end).copied().is_some_and(Self::is_word_byte);
        if matches {
            self.pos = end;
        }
        matches
    }

    /// Consumes a plain or double-quoted identifier.
    fn identifier(&mut self) -> bool {
        match self.peek() {
            Some(b'"') => self.quoted(b'"', false),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while self.peek().is_some_and(Self::is_word_byte) {
                    self.pos += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// Consumes text quoted by `quote` (doubled inside to escape it; with `backslash`,
    /// `\` escapes the next byte too, as in `E'…'`).
    fn quoted(&mut self, quote: u8, backslash: bool) -> bool {
        self.pos += 1;
        while let Some(c) = self.peek() {
            self.pos += 1;
            if backslash && c == b'\\' {
                self.pos += 1;
            } else if c == quote {
                if self.peek() == Some(quote) {
                    self.pos += 1;
                } else {
                    return true;
                }
            }
        }
        false
    }

    /// Consumes `$tag$ … $tag$` if one starts here (a `$1` parameter does not).
    fn dollar_quoted(&mut self) -> bool {
        let rest = &self.text[self.pos..];
        let Some(len) = rest[1..].iter().position(|&c| c == b'$') else {
            return false;
        };
        let tag = &rest[..len + 2];
        let valid = tag[1..=len]
            .iter()
            .enumerate()
            .all(|(i, &c)| c.is_ascii_alphabetic() || c == b'_' || (i > 0 && c.is_ascii_digit()));
        if !valid {
            return false;
        }
        let body = &rest[tag.len()..];
        match body.windows(tag.len()).position(|w| w == tag) {
            Some(at) => {
                self.pos += tag.len() + at + tag.len();
                true
            }
            None => false,
        }
    }

    /// Consumes a balanced `( … )`, skipping literals, quoted names and comments.
    fn parenthesized(&mut self) -> bool {
        if self.peek() != Some(b'(') {
            return false;
        }
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'(' => {
                    depth += 1;
                    self.pos += 1;
                }
                b')' => {
                    depth -= 1;
                    self.pos += 1;
                    if depth == 0 {
                        return true;
                    }
                }
                b'\'' => {
                    let escaped = self.pos > 0
                        && matches!(self.text[self.pos - 1], b'e' | b'E')
                        && !self
                            .text
                            .get(self.pos.wrapping_sub(2))
                            .copied()
                            .is_some_and(Self::is_word_byte);
                    if !self.quoted(b'\'', escaped) {
                        return false;
                    }
                }
                b'"' => {
                    if !self.quoted(b'"', false) {
                        return false;
                    }
                }
                b'$' if !self.dollar_quoted() => self.pos += 1,
                b'-' if self.at(1) == Some(b'-') => self.skip_blank(),
                b'/' if self.at(1) == Some(b'*') => self.block_comment(),
                _ => self.pos += 1,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spin_sdk::pg4::{Column, DbDataType};

    fn split(sql: &str) -> (Option<&str>, &str) {
        split_with(sql)
    }

    #[test]
    fn a_plain_statement_becomes_the_one_cte() {
        let wrapped = wrap("SELECT a FROM t WHERE b = $1 ORDER BY a;\n");
        assert!(
            wrapped.starts_with("WITH toaster_q AS (\nSELECT a FROM t WHERE b = $1 ORDER BY a\n)")
        );
        assert!(wrapped.ends_with("AS toaster_r ON true"));
    }

    #[test]
    fn a_with_list_is_spliced_in_front_not_nested() {
        let sql = "WITH expired AS (DELETE FROM x WHERE t < now() RETURNING 1), \
                   fresh AS MATERIALIZED (SELECT ')' AS p) \
                   INSERT INTO y SELECT 1 RETURNING id";
        let (head, main) = split(sql);
        assert_eq!(
            head,
            Some(
                "WITH expired AS (DELETE FROM x WHERE t < now() RETURNING 1), \
                 fresh AS MATERIALIZED (SELECT ')' AS p)"
            )
        );
        assert_eq!(main.trim(), "INSERT INTO y SELECT 1 RETURNING id");
        let wrapped = wrap(sql);
        assert!(wrapped.contains("(SELECT ')' AS p),\ntoaster_q AS (\n INSERT INTO y"));
    }

    #[test]
    fn comments_literals_and_quoted_names_do_not_end_a_cte_early() {
        let sql = "-- a comment with WITH in it\n/* and ( a /* nested */ block */ \
                   with recursive \"odd ) name\" (a, b) AS NOT MATERIALIZED ( \
                   SELECT 'it''s )', E'\\')', $$ ) $$, $tag$ ) $tag$, $1 -- )\n ) \
                   SELECT * FROM \"odd ) name\"";
        let (head, main) = split(sql);
        let head = head.expect("the WITH list is found");
        assert!(head.ends_with("-- )\n )"), "{head}");
        assert_eq!(main.trim(), "SELECT * FROM \"odd ) name\"");
    }

    #[test]
    fn what_the_scanner_cannot_follow_is_nested_whole() {
        for sql in [
            "WITH a AS (SELECT 1",
            "WITH AS (SELECT 1) SELECT 2",
            "WITH a (x AS (SELECT 1) SELECT 2",
            "WITH a SELECT 1",
            "WITHOUT (SELECT 1)",
            "WITH a AS (SELECT '1) SELECT 2",
        ] {
            assert_eq!(split(sql), (None, sql), "{sql}");
        }
    }

    #[test]
    fn a_trailing_comment_cannot_swallow_the_closing_parenthesis() {
        let wrapped = wrap("SELECT 1 -- trailing");
        assert!(wrapped.contains("-- trailing\n) SELECT"));
    }

    fn column(name: &str) -> Column {
        Column {
            name: name.to_string(),
            data_type: DbDataType::Boolean,
        }
    }

    #[test]
    fn the_marker_row_of_an_empty_result_is_dropped() {
        let rows = RowSet {
            columns: vec![column("toaster_row"), column("a")],
            rows: vec![vec![DbValue::DbNull, DbValue::DbNull]],
        };
        let rows = unwrap(rows);
        assert_eq!(rows.columns.len(), 1);
        assert_eq!(rows.columns[0].name, "a");
        assert!(rows.rows.is_empty());
    }

    #[test]
    fn real_rows_lose_only_the_marker_column() {
        let rows = RowSet {
            columns: vec![column("toaster_row"), column("a")],
            rows: vec![
                vec![DbValue::Boolean(true), DbValue::DbNull],
                vec![DbValue::Boolean(true), DbValue::Int64(2)],
            ],
        };
        let rows = unwrap(rows);
        assert_eq!(rows.rows.len(), 2);
        assert!(matches!(rows.rows[0][..], [DbValue::DbNull]));
        assert!(matches!(rows.rows[1][..], [DbValue::Int64(2)]));
        // One real row whose first value is NULL is a row, not the marker.
        let one = unwrap(RowSet {
            columns: vec![column("toaster_row"), column("a")],
            rows: vec![vec![DbValue::Boolean(true), DbValue::DbNull]],
        });
        assert_eq!(one.rows.len(), 1);
    }

    #[test]
    fn a_result_without_the_marker_is_left_alone() {
        let rows = unwrap(RowSet {
            columns: vec![column("a")],
            rows: vec![vec![DbValue::DbNull]],
        });
        assert_eq!(rows.rows.len(), 1);
    }
}

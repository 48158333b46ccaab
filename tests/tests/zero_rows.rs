//! The zero-row workaround of `toaster_platform::db` (Spin 4.0.0–4.0.2 never answer a
//! `query` that yields no rows) against a real PostgreSQL: every shape of statement the
//! components send gives the same rows, in the same order, and the same SQLSTATE,
//! wrapped or not, and no wrapped statement yields zero rows on the wire.

use toaster_platform::db::zero_rows::wrap;
use toaster_tests::TestDb;
use tokio_postgres::{Client, SimpleQueryMessage};

/// What a statement yields: its rows as text, or its SQLSTATE.
#[derive(Debug, PartialEq)]
enum Outcome {
    Rows(Vec<Vec<Option<String>>>),
    Error(String),
}

async fn run(client: &Client, sql: &str) -> (Outcome, usize) {
    // Each statement in a transaction rolled back, so data-modifying ones see the same
    // table both times.
    client.batch_execute("BEGIN").await.unwrap();
    let outcome = match client.simple_query(sql).await {
        Ok(messages) => {
            let rows: Vec<Vec<Option<String>>> = messages
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect();
            let on_wire = rows.len();
            (Outcome::Rows(rows), on_wire)
        }
        Err(e) => (
            Outcome::Error(e.code().map(|c| c.code().to_owned()).unwrap_or_default()),
            0,
        ),
    };
    client.batch_execute("ROLLBACK").await.unwrap();
    outcome
}

/// The wrapped statement's rows as the component sees them (the marker stripped).
fn unwrapped(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Rows(rows) if rows.len() == 1 && rows[0][0].is_none() => Outcome::Rows(vec![]),
        Outcome::Rows(rows) => Outcome::Rows(
            rows.into_iter()
                .map(|row| {
                    assert_eq!(row[0].as_deref(), Some("t"), "a real row is marked");
                    row[1..].to_vec()
                })
                .collect(),
        ),
        error => error,
    }
}

#[tokio::test]
async fn every_statement_shape_answers_the_same_wrapped_and_never_with_zero_rows() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL, parent int REFERENCES t (id));
             INSERT INTO t SELECT g, 'n' || g, NULL FROM generate_series(1, 500) AS g;
             CREATE TABLE log (at int);",
        )
        .await
        .unwrap();
    let statements = [
        // Plain selects: none, one, many in order, NULLs, duplicate column names.
        "SELECT id, name FROM t WHERE id = 0",
        "SELECT id, name FROM t WHERE id = 7",
        "SELECT id, name FROM t ORDER BY id DESC",
        "SELECT id, name FROM t ORDER BY name LIMIT 40 OFFSET 3",
        "SELECT NULL::int, NULL::text",
        "SELECT 1 AS a, 2 AS a",
        "SELECT count(*) FROM t WHERE id < 0",
        "SELECT 1 FROM pg_advisory_xact_lock(42)",
        "SELECT id FROM t WHERE id IN (3, 4) ORDER BY id FOR UPDATE",
        // Writes that return rows, or none.
        "INSERT INTO t (id, name) VALUES (1000, 'x') RETURNING id, name",
        "INSERT INTO t (id, name) VALUES (1, 'x') ON CONFLICT DO NOTHING RETURNING 1",
        "UPDATE t SET name = 'y' WHERE id > 495 RETURNING id",
        "UPDATE t SET name = 'y' WHERE id > 9999 RETURNING id",
        "DELETE FROM t WHERE id = 500 RETURNING name",
        // A WITH list, with data-modifying CTEs (which must stay at the top level).
        "WITH gone AS (DELETE FROM t WHERE id > 490 RETURNING id), \
              logged AS (INSERT INTO log SELECT id FROM gone RETURNING at) \
         SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM logged)",
        "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) \
         SELECT i FROM n ORDER BY i DESC",
        "WITH x AS MATERIALIZED (SELECT ')' AS p -- )\n) SELECT p FROM x WHERE false",
        "-- a leading comment\nSELECT 'with' AS w;",
        // Errors keep their SQLSTATE.
        "INSERT INTO t (id, name) VALUES (1, 'dup') RETURNING id",
        "INSERT INTO t (id, name, parent) VALUES (2000, 'orphan', 9999) RETURNING id",
        "INSERT INTO t (id, name) VALUES (2001, NULL) RETURNING id",
        "SELECT 1 / 0",
        "SELECT * FROM missing",
        "SELECT 'x'::int",
    ];
    for sql in statements {
        let (raw, _) = run(&client, sql).await;
        let (wrapped, on_wire) = run(&client, &wrap(sql)).await;
        if let Outcome::Rows(_) = wrapped {
            assert!(on_wire >= 1, "zero rows on the wire for {sql}");
        }
        assert_eq!(unwrapped(wrapped), raw, "{sql}");
    }
}

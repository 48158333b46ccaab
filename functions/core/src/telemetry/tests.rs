//! Unit tests of `telemetry`.

use super::*;
use serde_json::json;

// 2026-11-21T10:00:00Z
const NOW: i64 = 1_795_255_200_000;
const DAY: i64 = 86_400_000;
const OLDEST: i64 = NOW - 30 * DAY;

fn parse(body: &serde_json::Value) -> Result<Batch, BatchError> {
    parse_batch(
        body.to_string().as_bytes(),
        &BatchLimits::default(),
        NOW,
        OLDEST,
    )
}

fn parse_text(body: &str) -> Result<Batch, BatchError> {
    parse_batch(body.as_bytes(), &BatchLimits::default(), NOW, OLDEST)
}

fn field_errors(result: Result<Batch, BatchError>) -> Vec<(String, String)> {
    match result {
        Err(BatchError::Invalid(errors)) => {
            errors.into_iter().map(|e| (e.pointer, e.detail)).collect()
        }
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn pointers(result: Result<Batch, BatchError>) -> Vec<String> {
    field_errors(result).into_iter().map(|(p, _)| p).collect()
}

fn metric(name: &str) -> MetricName {
    MetricName::parse(name).unwrap()
}

#[test]
fn parses_the_documented_example() {
    let batch = parse(&json!({"readings": [
        {"metric": "temp_c", "ts": "2026-11-21T10:00:00.123Z", "value": 21.5},
        {"metric": "door.open", "ts": 1_795_255_200_123_i64, "value": true},
        {"metric": "count", "ts": "2026-11-21T11:00:00+01:00", "value": -3},
    ]}))
    .unwrap();
    assert_eq!(
        batch,
        Batch {
            readings: vec![
                Reading {
                    metric: metric("temp_c"),
                    ts_ms: NOW + 123,
                    value: Value::Number(21.5)
                },
                Reading {
                    metric: metric("door.open"),
                    ts_ms: NOW + 123,
                    value: Value::Bool(true)
                },
                Reading {
                    metric: metric("count"),
                    ts_ms: NOW,
                    value: Value::Number(-3.0)
                },
            ],
            duplicates: 0,
        }
    );
}

#[test]
fn member_names_are_compared_after_unescaping() {
    // `\u0069` is `i`: the same member as `metric`, as JSON defines it.
    let batch = parse_text(
        r#"{"re\u0061dings": [{"metr\u0069c": "t", "ts": 1795255200000, "v\u0061lue": 1}]}"#,
    )
    .unwrap();
    assert_eq!(batch.readings.len(), 1);
    assert_eq!(batch.readings[0].metric, metric("t"));
    // An escaped unknown name is reported by its unescaped text, `~` and `/` escaped
    // as RFC 6901 pointers are.
    assert_eq!(
        pointers(parse_text(
            r#"{"readings": [{"metric": "t", "ts": 1795255200000, "value": 1, "a\/b": 2}]}"#
        )),
        vec!["/readings/0/a~1b".to_owned()]
    );
    // The same member twice, once escaped.
    assert_eq!(
        field_errors(parse_text(
            r#"{"readings": [{"metric": "t", "m\u0065tric": "u", "ts": 1795255200000, "value": 1}]}"#
        )),
        vec![(
            "/readings/0/metric".to_owned(),
            "appears more than once".to_owned()
        )]
    );
}

#[test]
fn malformed_json_is_distinct_from_schema_violations() {
    for body in [
        "",
        "{",
        "{\"readings\": [}",
        "nul",
        "{\"readings\": []} x",
        "\u{feff}{}",
    ] {
        assert!(
            matches!(parse_text(body), Err(BatchError::Malformed(_))),
            "{body:?}"
        );
    }
    assert!(matches!(
        parse_batch(
            b"{\"readings\": \"\xff\"}",
            &BatchLimits::default(),
            NOW,
            OLDEST
        ),
        Err(BatchError::Malformed(_))
    ));
    let problem = Problem::from(parse_text("{").unwrap_err());
    assert_eq!(problem.status, 400);
    let problem = Problem::from(parse_text("{}").unwrap_err());
    assert_eq!(problem.status, 422);
    assert_eq!(problem.errors[0].pointer, "/readings");
}

#[test]
fn the_top_level_must_be_an_object_with_readings() {
    assert_eq!(pointers(parse_text("[]")), [""]);
    assert_eq!(pointers(parse_text("42")), [""]);
    assert_eq!(pointers(parse_text("{}")), ["/readings"]);
    assert_eq!(pointers(parse_text(r#"{"readings": {}}"#)), ["/readings"]);
    assert_eq!(pointers(parse_text(r#"{"readings": null}"#)), ["/readings"]);
}

#[test]
fn an_empty_batch_is_refused() {
    assert_eq!(
        field_errors(parse(&json!({"readings": []}))),
        [(
            "/readings".to_owned(),
            "must contain at least one reading".to_owned()
        )]
    );
}

#[test]
fn too_many_readings_are_refused_before_looking_at_them() {
    let reading = json!({"metric": "m", "ts": NOW, "value": 1});
    let limits = BatchLimits { max_readings: 3 };
    let body = json!({"readings": vec![reading.clone(); 4]}).to_string();
    let result = parse_batch(body.as_bytes(), &limits, NOW, OLDEST);
    assert_eq!(pointers(result), ["/readings"]);
    let body = json!({"readings": vec![reading; 3]}).to_string();
    assert!(parse_batch(body.as_bytes(), &limits, NOW, OLDEST).is_ok());
    assert_eq!(BatchLimits::default().max_readings, 5000);
}

#[test]
fn unknown_and_repeated_fields_are_refused() {
    let body = r#"{"readings": [{"metric": "m", "ts": 1795255200000, "value": 1, "unit": "C", "a/b~": 0}],
                       "device": "x", "readings": []}"#;
    assert_eq!(
        pointers(parse_text(body)),
        ["/device", "/readings"],
        "top level is reported first, without looking into readings"
    );
    let body = r#"{"readings": [{"metric": "m", "ts": 1795255200000, "value": 1, "unit": "C", "a/b~": 0, "value": 2}]}"#;
    assert_eq!(
        pointers(parse_text(body)),
        [
            "/readings/0/unit",
            "/readings/0/a~1b~0",
            "/readings/0/value"
        ]
    );
    let long = "k".repeat(1000);
    let body = format!(
        r#"{{"readings": [{{"metric": "m", "ts": 1795255200000, "value": 1, "{long}": 0}}]}}"#
    );
    let errors = field_errors(parse_text(&body));
    assert_eq!(errors[0].0, "/readings/0");
    assert!(!errors[0].1.contains(&long));
}

#[test]
fn every_error_is_reported_with_its_pointer() {
    let result = parse(&json!({"readings": [
        {"metric": "ok", "ts": NOW, "value": 1},
        {"metric": "Bad Name", "ts": "yesterday", "value": "hot"},
        {"ts": NOW},
        "not an object",
        {"metric": "ok", "ts": NOW + 6 * 60 * 1000, "value": null},
        {"metric": 7, "ts": 1.5, "value": [1]},
    ]}));
    assert_eq!(
        pointers(result),
        [
            "/readings/1/metric",
            "/readings/1/ts",
            "/readings/1/value",
            "/readings/2/metric",
            "/readings/2/value",
            "/readings/3",
            "/readings/4/ts",
            "/readings/4/value",
            "/readings/5/metric",
            "/readings/5/ts",
            "/readings/5/value",
        ]
    );
}

#[test]
fn timestamps_are_bounded_by_retention_and_five_minutes_ahead() {
    let at = |ts: i64| json!({"readings": [{"metric": "m", "ts": ts, "value": 1}]});
    assert!(parse(&at(OLDEST)).is_ok());
    assert!(parse(&at(NOW + MAX_FUTURE_MS)).is_ok());
    assert_eq!(
        field_errors(parse(&at(OLDEST - 1))),
        [(
            "/readings/0/ts".to_owned(),
            "is older than the retention period".to_owned()
        )]
    );
    assert_eq!(
        field_errors(parse(&at(NOW + MAX_FUTURE_MS + 1))),
        [(
            "/readings/0/ts".to_owned(),
            "is more than 5 minutes in the future".to_owned()
        )]
    );
    assert_eq!(pointers(parse(&at(-1))), ["/readings/0/ts"]);
}

#[test]
fn timestamps_must_be_zoned_rfc3339_or_integer_milliseconds() {
    for ts in [
        json!("2026-11-21T10:00:00"),
        json!("10000-01-01T00:00:00Z"),
        json!("2026-13-01T00:00:00Z"),
        json!("2026-11-21 10:00:00Z"),
        json!("1795255200000"),
        json!(1_795_255_200_000.5),
        json!(1.7952552e12),
        json!(u64::MAX),
        json!(true),
        json!(null),
        json!({}),
    ] {
        let body = json!({"readings": [{"metric": "m", "ts": ts, "value": 1}]});
        assert_eq!(pointers(parse(&body)), ["/readings/0/ts"], "{ts}");
    }
}

#[test]
fn values_must_be_finite_numbers_or_booleans() {
    let body = r#"{"readings": [
            {"metric": "a", "ts": 1795255200000, "value": 1e400},
            {"metric": "b", "ts": 1795255200000, "value": -1e400},
            {"metric": "c", "ts": 1795255200000, "value": "1"},
            {"metric": "d", "ts": 1795255200000, "value": null},
            {"metric": "e", "ts": 1795255200000, "value": {"v": 1}}
        ]}"#;
    assert_eq!(
        pointers(parse_text(body)),
        [
            "/readings/0/value",
            "/readings/1/value",
            "/readings/2/value",
            "/readings/3/value",
            "/readings/4/value"
        ]
    );
    let body = r#"{"readings": [
            {"metric": "a", "ts": 1795255200000, "value": 1e100},
            {"metric": "b", "ts": 1795255200000, "value": 100000000000000000000000000000},
            {"metric": "c", "ts": 1795255200000, "value": -0},
            {"metric": "d", "ts": 1795255200000, "value": false},
            {"metric": "e", "ts": 1795255200000, "value": -1E+100},
            {"metric": "f", "ts": 1795255200000, "value": 5e-324}
        ]}"#;
    let values: Vec<f64> = parse_text(body)
        .unwrap()
        .readings
        .iter()
        .map(|r| r.value.as_f64())
        .collect();
    assert_eq!(values, [1e100, 1e29, 0.0, 0.0, -1e100, 5e-324]);
}

#[test]
fn values_beyond_1e100_are_refused_naming_the_range() {
    let detail = "must be a number from -1e100 to 1e100";
    for value in [
        "1.7976931348623157e308",
        "-1.7976931348623157e308",
        "1e400",
        "-1e400",
        "1.0000000000000002e100",
        "-1.0000000000000002e100",
        "1e101",
        &format!("1{}", "0".repeat(101)),
    ] {
        let body = format!(
            r#"{{"readings": [
                    {{"metric": "ok", "ts": 1795255200000, "value": 1}},
                    {{"metric": "big", "ts": 1795255200000, "value": {value}}}
                ]}}"#
        );
        assert_eq!(
            field_errors(parse_text(&body)),
            [("/readings/1/value".to_owned(), detail.to_owned())],
            "{value}"
        );
    }
    // The bound is inclusive, and the next double above it is out.
    let above = f64::from_bits(MAX_ABS_VALUE.to_bits() + 1);
    let body =
        format!(r#"{{"readings": [{{"metric": "m", "ts": 1795255200000, "value": {above:e}}}]}}"#);
    assert_eq!(field_errors(parse_text(&body)).len(), 1, "{above:e}");
    // Every literal that reads as the bound is in.
    let body = r#"{"readings": [{"metric": "m", "ts": 1795255200000,
                        "value": 1.00000000000000000001e100}]}"#;
    assert_eq!(
        parse_text(body).unwrap().readings[0].value,
        Value::Number(1e100)
    );
}

#[test]
fn no_number_of_readings_in_range_can_overflow_a_sum() {
    // The largest sum a minute could hold: a 1 kHz sensor at the bound, and far more.
    let readings = 60_000.0 * 1e9;
    assert!((readings * MAX_ABS_VALUE).is_finite());
    // Adding any in-range batch to the largest finite total leaves it finite: the
    // rollup upsert (`o.total + excluded.total`) cannot overflow, even on a total
    // stored before the bound.
    assert_eq!(f64::MAX + 1e12 * MAX_ABS_VALUE, f64::MAX);
    assert_eq!(-f64::MAX - 1e12 * MAX_ABS_VALUE, -f64::MAX);
}

#[test]
fn hostile_metric_names_are_refused() {
    for name in [
        "",
        "temp'; DROP TABLE telemetry; --",
        "temp\u{0}",
        "température",
        &"a".repeat(129),
    ] {
        let body = json!({"readings": [{"metric": name, "ts": NOW, "value": 1}]});
        assert_eq!(pointers(parse(&body)), ["/readings/0/metric"], "{name:?}");
    }
}

#[test]
fn duplicates_keep_the_first_and_are_counted() {
    let batch = parse(&json!({"readings": [
        {"metric": "m", "ts": NOW, "value": 1},
        {"metric": "m", "ts": "2026-11-21T10:00:00Z", "value": 2},
        {"metric": "n", "ts": NOW, "value": 3},
        {"metric": "m", "ts": NOW + 1, "value": 4},
        {"metric": "m", "ts": NOW, "value": 5},
    ]}))
    .unwrap();
    let kept: Vec<(String, i64, f64)> = batch
        .readings
        .iter()
        .map(|r| (r.metric.to_string(), r.ts_ms, r.value.as_f64()))
        .collect();
    assert_eq!(
        kept,
        [
            ("m".to_owned(), NOW, 1.0),
            ("n".to_owned(), NOW, 3.0),
            ("m".to_owned(), NOW + 1, 4.0)
        ]
    );
    assert_eq!(batch.duplicates, 2);
}

#[test]
fn escaped_strings_are_decoded_before_validation() {
    let body = r#"{"readings": [{"metric": "temp\u005fc", "ts": "2026-11-21T10:00:00\u005a", "value": 1}]}"#;
    let batch = parse_text(body).unwrap();
    assert_eq!(batch.readings[0].metric.as_str(), "temp_c");
    assert_eq!(batch.readings[0].ts_ms, NOW);
}

#[test]
fn values_serialize_as_plain_json() {
    assert_eq!(serde_json::to_string(&Value::Number(1.5)).unwrap(), "1.5");
    assert_eq!(serde_json::to_string(&Value::Bool(true)).unwrap(), "true");
}

#[test]
fn deep_nesting_is_refused_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_text(&deep).is_err());
    let body =
        format!(r#"{{"readings": [{{"metric": "m", "ts": 1795255200000, "value": {deep}}}]}}"#);
    assert!(parse_text(&body).is_err());
}

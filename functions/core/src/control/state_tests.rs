use serde_json::{Value, json};

use super::*;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn merged(target: Value, patch: Value) -> Value {
    Value::Object(
        apply(&object(target), &patch, &Limits::default())
            .expect("within the limits")
            .document,
    )
}

/// RFC 7386, appendix A: every example whose target and patch are objects (a state
/// document is always an object; the examples with other patches are refused).
#[test]
fn merge_patch_follows_rfc_7386_appendix_a() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (target, patch, want) in cases {
        assert_eq!(
            merged(target.clone(), patch.clone()),
            want,
            "{target} + {patch}"
        );
    }
    // The appendix's patches that are not objects replace the whole document: a state
    // document must stay an object, so they are refused.
    for patch in [json!(["c"]), json!(null), json!("bar"), json!([1, 2])] {
        assert_eq!(
            apply(&object(json!({"a": "b"})), &patch, &Limits::default()),
            Err(StateError::NotAnObject),
            "{patch}"
        );
    }
}

#[test]
fn changed_names_the_top_level_members_that_differ() {
    let document = object(json!({"power": "on", "level": 3, "led": {"r": 1}}));
    let applied = apply(
        &document,
        &json!({"power": "off", "level": 3, "led": {"g": 2}, "gone": null, "new": true}),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(applied.changed, vec!["led", "new", "power"]);
    // Deleting a member changes it; a patch that changes nothing names nothing.
    let applied = apply(&document, &json!({"level": null}), &Limits::default()).unwrap();
    assert_eq!(applied.changed, vec!["level"]);
    let applied = apply(&document, &json!({"level": 3}), &Limits::default()).unwrap();
    assert!(applied.changed.is_empty());
}

#[test]
fn limits_refuse_and_name_themselves() {
    let limits = Limits {
        max_bytes: 64,
        max_depth: 3,
        max_keys: 4,
    };
    let empty = Map::new();
    assert_eq!(
        apply(&empty, &json!({"a": {"b": {"c": {"d": 1}}}}), &limits),
        Err(StateError::TooDeep { max: 3 })
    );
    assert_eq!(
        apply(&empty, &json!({"a": [[[1]]]}), &limits),
        Err(StateError::TooDeep { max: 3 })
    );
    assert!(apply(&empty, &json!({"a": {"b": {"c": 1}}}), &limits).is_ok());
    assert_eq!(
        apply(
            &empty,
            &json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}),
            &limits
        ),
        Err(StateError::TooManyKeys { max: 4 })
    );
    // Members added to a document that already has some: the result is checked.
    let full = object(json!({"a": 1, "b": 2, "c": 3, "d": 4}));
    assert_eq!(
        apply(&full, &json!({"e": 5}), &limits),
        Err(StateError::TooManyKeys { max: 4 })
    );
    assert!(apply(&full, &json!({"e": 5, "a": null}), &limits).is_ok());
    let err = apply(&empty, &json!({"text": "x".repeat(80)}), &limits).unwrap_err();
    assert!(
        matches!(err, StateError::TooLarge { max: 64, .. }),
        "{err:?}"
    );
    assert!(err.is_size());
    assert!(!StateError::TooDeep { max: 1 }.is_size());
    assert_eq!(
        apply(&empty, &json!({"": 1}), &limits),
        Err(StateError::BadKey)
    );
    assert_eq!(
        apply(&empty, &json!({"k".repeat(129): 1}), &limits),
        Err(StateError::BadKey)
    );
    // Every error says which variable sets the limit.
    assert!(
        StateError::TooLarge { size: 70, max: 64 }
            .to_string()
            .contains("state_max_bytes")
    );
}

#[test]
fn delta_is_what_desired_asks_and_reported_does_not_have() {
    let desired = object(json!({
        "power": "off",
        "set_point": 21,
        "led": {"r": 255, "g": 0},
        "schedule": [1, 2],
        "mode": "eco"
    }));
    let reported = object(json!({
        "power": "on",
        "set_point": 21.0,
        "led": {"r": 255, "g": 10},
        "schedule": [1, 2],
        "firmware": "1.4.0"
    }));
    assert_eq!(
        Value::Object(delta(&desired, &reported)),
        json!({"power": "off", "led": {"g": 0}, "mode": "eco"})
    );
    assert!(delta(&reported, &reported).is_empty());
    assert!(delta(&Map::new(), &reported).is_empty());
}

#[test]
fn etags_change_with_either_version_and_match_lists() {
    let tag = etag(3, 7);
    assert_ne!(tag, etag(4, 7));
    assert_ne!(tag, etag(3, 8));
    assert_ne!(etag(1, 23), etag(12, 3));
    assert!(if_none_match(&tag, &tag));
    assert!(if_none_match(&format!("\"x\", W/{tag}"), &tag));
    assert!(if_none_match("*", &tag));
    assert!(!if_none_match(&etag(3, 8), &tag));
    assert!(!if_none_match("", &tag));
}

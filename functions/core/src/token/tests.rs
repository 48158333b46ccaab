//! Unit tests of `token`.

use std::collections::HashSet;

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::{ECDSAP256KeyPairLike, ES256KeyPair};
use serde_json::{Value, json};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;
const MINUTE: Duration = Duration::from_secs(60);

fn signer() -> TokenSigner {
    TokenSigner::from_secret(SECRET).unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn device_claims() -> AccessClaims {
    AccessClaims::device(tenant(), &DeviceId::parse("sn-1").unwrap(), 3)
}

fn rejected(result: Result<VerifiedToken, TokenError>) -> Rejection {
    match result {
        Err(TokenError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// `payload` as jwt-simple claims, nothing added.
fn raw_claims(payload: Value) -> JWTClaims<Value> {
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: payload,
    }
}

/// Signs an arbitrary payload with the real secret, as a bug or an older version
/// of the backend might.
fn sign_payload(payload: Value) -> String {
    HS256Key::from_bytes(SECRET.as_bytes())
        .authenticate(raw_claims(payload))
        .unwrap()
}

/// `token` with its header replaced by one claiming HS256: payload and signature
/// as they were.
fn relabelled_hs256(token: &str) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    format!("{header}.{rest}")
}

fn standard_payload() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "sn-1",
        "iat": NOW, "nbf": NOW, "exp": NOW + 60,
        "role": "device", "tenant": "acme", "gen": 3,
    })
}

#[test]
fn secret_shorter_than_32_bytes_is_refused() {
    assert_eq!(
        TokenSigner::from_secret(&"x".repeat(31)).unwrap_err(),
        KeyError::SecretTooShort { min: 32 }
    );
    assert!(TokenSigner::from_secret(&"x".repeat(32)).is_ok());
    // The shape `openssl rand -base64 32` prints.
    assert!(TokenSigner::from_secret("q2Zr3bV1pS0eXc9yTn4uWm8kJh7gFd6sAa5oLi2EwQs=").is_ok());
}

#[test]
fn round_trips_each_role() {
    for claims in [
        AccessClaims::operator("ops"),
        AccessClaims::admin(tenant(), "alice@example.com"),
        device_claims(),
    ] {
        let token = signer().mint_at(&claims, MINUTE, NOW).unwrap();
        let verified = signer().verify_at(&token, NOW + 30).unwrap();
        assert_eq!(verified.claims, claims);
        assert_eq!(verified.expires_at, NOW + 60);
    }
}

#[test]
fn mint_and_verify_use_the_system_clock() {
    let token = signer().mint(&device_claims(), MINUTE).unwrap();
    assert_eq!(signer().verify(&token).unwrap().claims, device_claims());
}

#[test]
fn wire_format_carries_the_documented_claims() {
    let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
    let mut payload: Value = jws::decode(jws::split(&token).unwrap().payload).unwrap();
    let jti = payload.as_object_mut().unwrap().remove("jti").unwrap();
    assert_eq!(payload, standard_payload());
    let jti = jti.as_str().unwrap();
    assert!(TokenId::parse(jti).is_some(), "{jti}");
    assert_eq!(
        signer().verify_at(&token, NOW).unwrap().token_id.as_str(),
        jti
    );
}

#[test]
fn every_token_gets_its_own_id() {
    let ids: HashSet<TokenId> = (0..200)
        .map(|_| {
            let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
            signer().verify_at(&token, NOW).unwrap().token_id
        })
        .collect();
    assert_eq!(ids.len(), 200);
    let issued = signer()
        .issue_at(
            &AccessClaims::operator("ops"),
            MINUTE,
            NOW,
            TokenId::parse("tok_000102030405060708090a0b0c0d0e0f").unwrap(),
        )
        .unwrap();
    assert_eq!(issued.expires_at, NOW + 60);
    let verified = signer().verify_at(&issued.token, NOW).unwrap();
    assert_eq!(verified.token_id, issued.token_id);
}

#[test]
fn a_token_without_an_id_is_known_by_its_signature() {
    // Minted before tokens carried a `jti`.
    let token = sign_payload(standard_payload());
    let first = signer().verify_at(&token, NOW).unwrap().token_id;
    assert_eq!(signer().verify_at(&token, NOW).unwrap().token_id, first);
    assert!(TokenId::parse(first.as_str()).is_some());
    let mut other = standard_payload();
    other["sub"] = json!("sn-2");
    let second = signer()
        .verify_at(&sign_payload(other), NOW)
        .unwrap()
        .token_id;
    assert_ne!(first, second);
}

#[test]
fn a_jti_of_another_shape_is_refused_even_when_signed() {
    for jti in [
        json!("abc"),
        json!(7),
        json!("tok_ABCDEF0123456789abcdef0123456789"),
    ] {
        let mut payload = standard_payload();
        payload["jti"] = jti.clone();
        assert_eq!(
            rejected(signer().verify_at(&sign_payload(payload), NOW)),
            Rejection::Claims,
            "{jti}"
        );
    }
}

#[test]
fn token_ids_parse_only_their_shape() {
    assert!(TokenId::parse("tok_0123456789abcdef0123456789abcdef").is_some());
    for bad in [
        "",
        "tok_",
        "tok_0123456789abcdef0123456789abcde",
        "tok_0123456789abcdef0123456789abcdef0",
        "tok_0123456789ABCDEF0123456789abcdef",
        "clm_0123456789abcdef0123456789abcdef",
        "tok_0123456789abcdef0123456789abcdeg",
    ] {
        assert!(TokenId::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn device_claims_name_the_device() {
    assert_eq!(
        device_claims().device_id(),
        Some(DeviceId::parse("sn-1").unwrap())
    );
    assert_eq!(AccessClaims::admin(tenant(), "sn-1").device_id(), None);
}

#[test]
fn device_tokens_longer_than_an_hour_are_refused() {
    let over = MAX_DEVICE_TTL + Duration::from_secs(1);
    assert_eq!(
        signer().mint_at(&device_claims(), over, NOW),
        Err(TokenError::Lifetime { max_secs: 3600 })
    );
    assert!(
        signer()
            .mint_at(&device_claims(), MAX_DEVICE_TTL, NOW)
            .is_ok()
    );
    // Admins may hold longer ones.
    let admin = AccessClaims::admin(tenant(), "alice");
    assert!(signer().mint_at(&admin, over, NOW).is_ok());
}

#[test]
fn sub_second_and_endless_lifetimes_are_refused() {
    let operator = AccessClaims::operator("ops");
    for ttl in [Duration::ZERO, Duration::from_millis(999), MAX_TTL * 2] {
        assert!(matches!(
            signer().mint_at(&operator, ttl, NOW),
            Err(TokenError::Lifetime { .. })
        ));
    }
}

#[test]
fn inconsistent_claims_are_not_minted() {
    let cases = [
        AccessClaims {
            tenant: Some(tenant()),
            ..AccessClaims::operator("ops")
        },
        AccessClaims {
            tenant: None,
            ..AccessClaims::admin(tenant(), "alice")
        },
        AccessClaims {
            key_generation: Some(1),
            ..AccessClaims::admin(tenant(), "alice")
        },
        AccessClaims {
            key_generation: None,
            ..device_claims()
        },
        AccessClaims {
            sub: "not a device id".to_owned(),
            ..device_claims()
        },
        AccessClaims::operator(""),
        AccessClaims::operator("x".repeat(257)),
    ];
    for claims in cases {
        assert_eq!(
            signer().mint_at(&claims, MINUTE, NOW),
            Err(TokenError::InconsistentClaims),
            "{claims:?}"
        );
    }
}

#[test]
fn expiry_allows_five_seconds_of_leeway_and_no_more() {
    let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
    assert!(signer().verify_at(&token, NOW + 60).is_ok());
    assert!(signer().verify_at(&token, NOW + 65).is_ok());
    assert_eq!(
        rejected(signer().verify_at(&token, NOW + 66)),
        Rejection::Expired
    );
}

#[test]
fn tokens_from_the_future_are_refused_beyond_the_leeway() {
    let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
    assert!(signer().verify_at(&token, NOW - 5).is_ok());
    assert_eq!(
        rejected(signer().verify_at(&token, NOW - 6)),
        Rejection::NotYetValid
    );
}

#[test]
fn another_secret_is_a_bad_signature() {
    let other = TokenSigner::from_secret(&"y".repeat(32)).unwrap();
    let token = other.mint_at(&device_claims(), MINUTE, NOW).unwrap();
    assert_eq!(
        rejected(signer().verify_at(&token, NOW)),
        Rejection::Signature
    );
}

#[test]
fn a_tampered_payload_is_a_bad_signature() {
    let token = signer()
        .mint_at(&AccessClaims::admin(tenant(), "alice"), MINUTE, NOW)
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value = jws::decode(parts[1]).unwrap();
    payload["tenant"] = json!("victim");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    assert_eq!(
        rejected(signer().verify_at(&forged, NOW)),
        Rejection::Signature
    );
}

#[test]
fn alg_none_is_refused() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(standard_payload().to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let result = signer().verify_at(&token, NOW);
        assert!(matches!(result, Err(TokenError::Rejected(_))), "{token}");
    }
    assert_eq!(
        rejected(signer().verify_at(&format!("{header}.{payload}."), NOW)),
        Rejection::Algorithm
    );
}

#[test]
fn an_es256_token_is_refused() {
    let key_pair = ES256KeyPair::generate();
    let claims = JWTClaims {
        issued_at: Some(UnixTimeStamp::from_secs(NOW)),
        expires_at: Some(UnixTimeStamp::from_secs(NOW + 60)),
        invalid_before: None,
        issuer: Some(ISSUER.to_owned()),
        subject: Some("sn-1".to_owned()),
        audiences: Some(Audiences::AsString(AUDIENCE.to_owned())),
        jwt_id: None,
        nonce: None,
        custom: WireClaims {
            role: Role::Operator,
            tenant: None,
            key_generation: None,
        },
    };
    let token = key_pair.sign(claims).unwrap();
    assert_eq!(
        rejected(signer().verify_at(&token, NOW)),
        Rejection::Algorithm
    );
}

#[test]
fn a_header_claiming_hs256_over_an_es256_signature_is_refused() {
    let key_pair = ES256KeyPair::generate();
    let token = key_pair
        .sign(JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(NOW)),
            expires_at: Some(UnixTimeStamp::from_secs(NOW + 60)),
            invalid_before: None,
            issuer: Some(ISSUER.to_owned()),
            subject: Some("ops".to_owned()),
            audiences: Some(Audiences::AsString(AUDIENCE.to_owned())),
            jwt_id: None,
            nonce: None,
            custom: json!({"role": "operator"}),
        })
        .unwrap();
    assert_eq!(
        rejected(signer().verify_at(&relabelled_hs256(&token), NOW)),
        Rejection::Signature
    );
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let mut payload = standard_payload();
    payload["iss"] = json!("someone-else");
    assert_eq!(
        rejected(signer().verify_at(&sign_payload(payload), NOW)),
        Rejection::Issuer
    );

    let mut payload = standard_payload();
    payload["aud"] = json!("toaster");
    assert_eq!(
        rejected(signer().verify_at(&sign_payload(payload), NOW)),
        Rejection::Audience
    );

    let mut payload = standard_payload();
    payload.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        rejected(signer().verify_at(&sign_payload(payload), NOW)),
        Rejection::Audience
    );
}

#[test]
fn an_audience_array_must_name_us() {
    let mut payload = standard_payload();
    payload["aud"] = json!(["elsewhere", AUDIENCE]);
    assert!(signer().verify_at(&sign_payload(payload), NOW).is_ok());

    let mut payload = standard_payload();
    payload["aud"] = json!(["elsewhere"]);
    assert_eq!(
        rejected(signer().verify_at(&sign_payload(payload), NOW)),
        Rejection::Audience
    );
}

#[test]
fn other_hmac_algorithms_and_altered_signatures_are_refused() {
    use jwt_simple::prelude::HS384Key;
    // HS384 with the same secret: refused by its header, and by its length when
    // relabelled HS256.
    let hs384 = HS384Key::from_bytes(SECRET.as_bytes())
        .authenticate(raw_claims(standard_payload()))
        .unwrap();
    assert_eq!(
        rejected(signer().verify_at(&hs384, NOW)),
        Rejection::Algorithm
    );
    assert_eq!(
        rejected(signer().verify_at(&relabelled_hs256(&hs384), NOW)),
        Rejection::Signature
    );

    // A valid token with its signature cut, emptied, flipped or padded.
    let token = sign_payload(standard_payload());
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
    flipped[31] ^= 1;
    for (altered, why) in [
        (format!("{input}."), Rejection::Signature),
        (
            format!("{input}.{}", &signature[..42]),
            Rejection::Malformed,
        ),
        (
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(&flipped)),
            Rejection::Signature,
        ),
        (format!("{input}.{signature}="), Rejection::Malformed),
    ] {
        assert_eq!(
            rejected(signer().verify_at(&altered, NOW)),
            why,
            "{altered}"
        );
    }
    assert!(signer().verify_at(&token, NOW).is_ok());
}

#[test]
fn missing_or_inconsistent_claims_are_refused_even_when_signed() {
    let edits: [(&str, Value); 9] = [
        ("exp", Value::Null),
        ("iat", Value::Null),
        ("sub", Value::Null),
        ("gen", Value::Null),
        ("tenant", Value::Null),
        ("role", json!("root")),
        ("role", json!("operator")),
        ("role", json!("admin")),
        ("exp", json!(1.8e9)),
    ];
    for (field, value) in edits {
        let mut payload = standard_payload();
        if value.is_null() {
            payload.as_object_mut().unwrap().remove(field);
        } else {
            payload[field] = value;
        }
        let token = sign_payload(payload);
        assert_eq!(
            rejected(signer().verify_at(&token, NOW)),
            Rejection::Claims,
            "{field}"
        );
    }
}

#[test]
fn an_admin_without_tenant_is_refused() {
    let payload = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
        "iat": NOW, "exp": NOW + 60, "role": "admin",
    });
    assert_eq!(
        rejected(signer().verify_at(&sign_payload(payload), NOW)),
        Rejection::Claims
    );
}

#[test]
fn oversized_tokens_are_refused_before_any_work() {
    let mut payload = standard_payload();
    payload["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
    let token = sign_payload(payload);
    assert_eq!(
        rejected(signer().verify_at(&token, NOW)),
        Rejection::TooLarge
    );
}

#[test]
fn garbage_is_malformed() {
    for token in ["", "a", "a.b", "a.b.c", "....", "eyJ.eyJ.x", "\0.\0.\0"] {
        assert_eq!(
            rejected(signer().verify_at(token, NOW)),
            Rejection::Malformed,
            "{token:?}"
        );
    }
}

#[test]
fn the_public_message_does_not_say_which_check_failed() {
    let messages: HashSet<String> = [
        Rejection::Signature,
        Rejection::Expired,
        Rejection::Algorithm,
        Rejection::Claims,
    ]
    .into_iter()
    .map(|rejection| TokenError::Rejected(rejection).to_string())
    .collect();
    assert_eq!(
        messages,
        HashSet::from(["invalid or expired access token".to_owned()])
    );
}

#[test]
fn require_role_lets_listed_roles_through() {
    let token = signer()
        .verify_at(
            &signer().mint_at(&device_claims(), MINUTE, NOW).unwrap(),
            NOW,
        )
        .unwrap();
    assert!(require_role(&token, &[Role::Device]).is_ok());
    assert!(require_role(&token, &[Role::Admin, Role::Device]).is_ok());
    assert_eq!(
        require_role(&token, &[Role::Admin, Role::Operator]),
        Err(Forbidden { role: Role::Device })
    );
    assert!(require_role(&token, &[]).is_err());
}

#[test]
fn roles_serialize_lowercase() {
    assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), r#""admin""#);
    assert_eq!(
        serde_json::from_str::<Role>(r#""operator""#).unwrap(),
        Role::Operator
    );
    assert!(serde_json::from_str::<Role>(r#""Admin""#).is_err());
}

#[test]
fn debug_does_not_print_the_secret() {
    assert!(!format!("{:?}", signer()).contains("0123"));
}

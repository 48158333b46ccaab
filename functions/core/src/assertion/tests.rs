//! Unit tests of `assertion`.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jwt_simple::prelude::{
    ECDSAP256KeyPairLike, ES256KeyPair, ES256kKeyPair, ES384KeyPair, Ed25519KeyPair,
    EdDSAKeyPairLike, HS256Key, JWTClaims, MACLike,
};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn claims(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> JWTClaims<Value> {
    let mut custom = json!({
        "iss": "acme", "sub": "sn-1", "aud": "toaster",
        "jti": "a1b2c3", "iat": NOW, "exp": NOW + 300,
    });
    if let Some(object) = custom.as_object_mut() {
        edit(object);
    }
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom,
    }
}

struct Device {
    sign: Box<dyn Fn(JWTClaims<Value>) -> String>,
    key: DevicePublicKey,
}

fn es256_device() -> Device {
    let pair = ES256KeyPair::generate();
    let key = DevicePublicKey::from_pem(&pair.public_key().to_pem().unwrap()).unwrap();
    Device {
        sign: Box::new(move |claims| pair.sign(claims).unwrap()),
        key,
    }
}

fn ed25519_device() -> Device {
    let pair = Ed25519KeyPair::generate();
    let key = DevicePublicKey::from_pem(&pair.public_key().to_pem()).unwrap();
    Device {
        sign: Box::new(move |claims| pair.sign(claims).unwrap()),
        key,
    }
}

fn rejection(result: Result<Assertion, AssertionError>) -> Rejection {
    match result {
        Err(error) => error.rejection(),
        Ok(assertion) => panic!("accepted {assertion:?}"),
    }
}

fn verify(device: &Device, token: &str, now: u64) -> Result<Assertion, AssertionError> {
    verify_assertion(token, std::slice::from_ref(&device.key), &tenant(), now)
}

fn forge(header: &str, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[test]
fn accepts_a_valid_assertion_from_either_key_type() {
    for device in [es256_device(), ed25519_device()] {
        let token = (device.sign)(claims(|_| {}));
        let peeked = peek_assertion(&token).unwrap();
        assert_eq!(peeked.iss.as_str(), "acme");
        assert_eq!(peeked.sub.as_str(), "sn-1");
        let assertion = verify(&device, &token, NOW + 10).unwrap();
        assert_eq!(
            assertion,
            Assertion {
                tenant: tenant(),
                device: DeviceId::parse("sn-1").unwrap(),
                jti: "a1b2c3".to_owned(),
                iat: NOW,
                exp: NOW + 300,
            }
        );
    }
}

#[test]
fn any_of_several_keys_may_sign_during_rotation() {
    let old = ed25519_device();
    let new = es256_device();
    let token = (new.sign)(claims(|_| {}));
    let keys = [old.key.clone(), new.key.clone()];
    assert!(verify_assertion(&token, &keys, &tenant(), NOW).is_ok());
}

#[test]
fn a_signature_by_another_key_is_refused() {
    for (signer, verifier) in [
        (es256_device(), es256_device()),
        (ed25519_device(), ed25519_device()),
    ] {
        let token = (signer.sign)(claims(|_| {}));
        assert_eq!(
            rejection(verify(&verifier, &token, NOW)),
            Rejection::Signature
        );
    }
    let token = (es256_device().sign)(claims(|_| {}));
    assert_eq!(
        rejection(verify_assertion(&token, &[], &tenant(), NOW)),
        Rejection::Signature
    );
}

#[test]
fn alg_none_is_refused() {
    let device = es256_device();
    let token = forge(r#"{"alg":"none"}"#, &claims(|_| {}).custom, b"");
    assert_eq!(
        rejection(verify(&device, &token, NOW)),
        Rejection::Algorithm
    );
    assert_eq!(
        peek_assertion(&token).unwrap_err().rejection(),
        Rejection::Algorithm
    );
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    let device = es256_device();
    for alg in ["HS256", "HS384", "HS512"] {
        let token = HS256Key::from_bytes(device.key.to_pem().as_bytes())
            .authenticate(claims(|_| {}))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
        let token = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            rejection(verify(&device, &token, NOW)),
            Rejection::Algorithm,
            "{alg}"
        );
    }
}

#[test]
fn the_alg_must_match_the_key_type() {
    let es256 = es256_device();
    let ed25519 = ed25519_device();
    let token = (es256.sign)(claims(|_| {}));
    assert_eq!(
        rejection(verify(&ed25519, &token, NOW)),
        Rejection::Algorithm
    );
    let token = (ed25519.sign)(claims(|_| {}));
    assert_eq!(rejection(verify(&es256, &token, NOW)), Rejection::Algorithm);

    // An EdDSA signature relabelled as ES256 is checked by the P-256 key and fails.
    let parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#);
    let relabelled = format!("{header}.{}.{}", parts[1], parts[2]);
    assert_eq!(
        rejection(verify(&es256, &relabelled, NOW)),
        Rejection::Signature
    );
}

#[test]
fn a_tampered_payload_is_refused() {
    let device = ed25519_device();
    let token = (device.sign)(claims(|_| {}));
    let parts: Vec<&str> = token.split('.').collect();
    let payload = claims(|c| {
        c.insert("sub".into(), json!("sn-2"));
    })
    .custom;
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    assert_eq!(
        rejection(verify(&device, &forged, NOW)),
        Rejection::Signature
    );
}

#[test]
fn wrong_audience_or_tenant_is_refused() {
    let device = es256_device();
    for aud in [json!("toaster-api"), json!(["other"]), Value::Null] {
        let token = (device.sign)(claims(|c| {
            if aud.is_null() {
                c.remove("aud");
            } else {
                c.insert("aud".into(), aud.clone());
            }
        }));
        assert_eq!(
            rejection(verify(&device, &token, NOW)),
            Rejection::Audience,
            "{aud}"
        );
    }
    let token = (device.sign)(claims(|c| {
        c.insert("aud".into(), json!(["toaster", "other"]));
    }));
    assert!(verify(&device, &token, NOW).is_ok());

    let token = (device.sign)(claims(|_| {}));
    let other = TenantId::parse("other").unwrap();
    assert_eq!(
        rejection(verify_assertion(
            &token,
            std::slice::from_ref(&device.key),
            &other,
            NOW
        )),
        Rejection::Issuer
    );
}

#[test]
fn expiry_has_sixty_seconds_of_leeway() {
    let device = ed25519_device();
    let token = (device.sign)(claims(|_| {}));
    assert!(verify(&device, &token, NOW + 300 + 60).is_ok());
    assert_eq!(
        rejection(verify(&device, &token, NOW + 300 + 61)),
        Rejection::Expired
    );
}

#[test]
fn iat_and_nbf_in_the_future_are_refused_beyond_the_leeway() {
    let device = es256_device();
    let token = (device.sign)(claims(|_| {}));
    assert!(verify(&device, &token, NOW - 60).is_ok());
    assert_eq!(
        rejection(verify(&device, &token, NOW - 61)),
        Rejection::NotYetValid
    );

    let token = (device.sign)(claims(|c| {
        c.insert("nbf".into(), json!(NOW + 120));
    }));
    assert!(verify(&device, &token, NOW + 60).is_ok());
    assert_eq!(
        rejection(verify(&device, &token, NOW + 59)),
        Rejection::NotYetValid
    );
}

#[test]
fn lifetimes_over_an_hour_are_refused() {
    let device = es256_device();
    let token = (device.sign)(claims(|c| {
        c.insert("exp".into(), json!(NOW + 3600));
    }));
    assert!(verify(&device, &token, NOW).is_ok());
    for exp in [NOW + 3601, NOW - 1, u64::MAX] {
        let token = (device.sign)(claims(|c| {
            c.insert("exp".into(), json!(exp));
        }));
        let rejected = rejection(verify(&device, &token, NOW));
        assert!(
            matches!(rejected, Rejection::Lifetime | Rejection::Expired),
            "exp {exp}: {rejected:?}"
        );
    }
}

#[test]
fn missing_claims_are_refused() {
    let device = ed25519_device();
    for field in ["jti", "exp", "iat"] {
        let token = (device.sign)(claims(|c| {
            c.remove(field);
        }));
        assert_eq!(
            rejection(verify(&device, &token, NOW)),
            Rejection::Claims,
            "{field}"
        );
    }
    for jti in [json!(""), json!("j".repeat(129)), json!(42)] {
        let token = (device.sign)(claims(|c| {
            c.insert("jti".into(), jti.clone());
        }));
        assert_eq!(rejection(verify(&device, &token, NOW)), Rejection::Claims);
    }
    let token = (device.sign)(claims(|c| {
        c.insert("jti".into(), json!("j".repeat(128)));
    }));
    assert!(verify(&device, &token, NOW).is_ok());
}

#[test]
fn iss_and_sub_must_be_valid_identifiers() {
    let device = es256_device();
    let token = (device.sign)(claims(|c| {
        c.insert("sub".into(), json!("../admin"));
    }));
    assert_eq!(
        peek_assertion(&token).unwrap_err().rejection(),
        Rejection::Claims
    );
    let token = (device.sign)(claims(|c| {
        c.insert("iss".into(), json!("ACME"));
    }));
    assert_eq!(
        peek_assertion(&token).unwrap_err().rejection(),
        Rejection::Issuer
    );
}

#[test]
fn oversized_and_garbage_assertions_are_refused() {
    let device = es256_device();
    let token = (device.sign)(claims(|c| {
        c.insert("pad".into(), json!("x".repeat(MAX_ASSERTION_BYTES)));
    }));
    assert_eq!(rejection(verify(&device, &token, NOW)), Rejection::TooLarge);
    for garbage in ["", "x", "a.b", "a.b.c", "e30.e30.", "e30.e30.e30.e30"] {
        assert!(peek_assertion(garbage).is_err(), "{garbage:?}");
        assert!(verify(&device, garbage, NOW).is_err(), "{garbage:?}");
    }
}

#[test]
fn the_public_message_is_the_same_for_every_rejection() {
    let messages: HashSet<String> = [Rejection::Signature, Rejection::Expired]
        .map(|r| AssertionError::from(r).to_string())
        .into_iter()
        .collect();
    assert_eq!(messages.len(), 1);
    assert!(messages.contains("invalid client assertion"));
}

#[test]
fn replay_cache_keeps_the_jti_until_the_assertion_would_be_refused() {
    let device = es256_device();
    let token = (device.sign)(claims(|_| {}));
    let assertion = verify(&device, &token, NOW).unwrap();
    let ttl = assertion.ttl_remaining(NOW);
    assert_eq!(ttl, 300 + 60 + 1);
    // One second before the cache entry expires, the assertion is still accepted;
    // once it has expired, so has the assertion.
    assert!(verify(&device, &token, NOW + ttl - 1).is_ok());
    assert!(verify(&device, &token, NOW + ttl).is_err());
    assert_eq!(assertion.ttl_remaining(NOW + 10_000), 1);
}

mod keys {
    use super::*;

    #[test]
    fn pem_round_trips_canonically() {
        for device in [es256_device(), ed25519_device()] {
            let pem = device.key.to_pem();
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
            assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
            let again = DevicePublicKey::from_pem(&pem).unwrap();
            assert_eq!(again, device.key);
            assert_eq!(again.fingerprint(), device.key.fingerprint());
            assert_eq!(again.fingerprint().len(), 64);
        }
    }

    #[test]
    fn reports_the_algorithm() {
        assert_eq!(es256_device().key.algorithm(), KeyAlgorithm::Es256);
        assert_eq!(ed25519_device().key.algorithm(), KeyAlgorithm::Ed25519);
        assert_eq!(KeyAlgorithm::Es256.jws_alg(), "ES256");
        assert_eq!(KeyAlgorithm::Ed25519.jws_alg(), "EdDSA");
    }

    #[test]
    fn tolerates_crlf_and_surrounding_whitespace() {
        let pem = ed25519_device().key.to_pem();
        let messy = format!("\n  {}\r\n", pem.replace('\n', "\r\n"));
        assert!(DevicePublicKey::from_pem(&messy).is_ok());
    }

    fn pem_of(der: &[u8]) -> String {
        format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", STANDARD.encode(der))
    }

    #[test]
    fn refuses_other_curves_other_algorithms_and_private_keys() {
        let p384 = ES384KeyPair::generate().public_key().to_pem().unwrap();
        let secp256k1 = ES256kKeyPair::generate().public_key().to_pem().unwrap();
        // X25519 shares Ed25519's SPKI shape but not its OID (1.3.101.110).
        let mut x25519 = ED25519_SPKI_PREFIX.to_vec();
        x25519[8] = 110;
        x25519.extend_from_slice(&[9; 32]);
        for pem in [p384, secp256k1, pem_of(&x25519)] {
            assert_eq!(
                DevicePublicKey::from_pem(&pem).unwrap_err(),
                KeyError::Unsupported
            );
        }
        let private = ES256KeyPair::generate().to_pem().unwrap();
        assert_eq!(
            DevicePublicKey::from_pem(&private).unwrap_err(),
            KeyError::NotPem
        );
    }

    #[test]
    fn refuses_garbage_and_oversized_input() {
        let valid = ed25519_device().key.to_pem();
        let two_blocks = format!("{valid}{valid}");
        for garbage in [
            "",
            "hello",
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &two_blocks,
        ] {
            assert!(
                DevicePublicKey::from_pem(garbage).is_err(),
                "accepted {garbage:?}"
            );
        }
        let huge = format!("{valid}{}", " ".repeat(MAX_PEM_BYTES));
        assert_eq!(
            DevicePublicKey::from_pem(&huge).unwrap_err(),
            KeyError::TooLarge { max: 4096 }
        );
        // Valid base64 of a truncated key.
        let der = STANDARD.decode(valid.lines().nth(1).unwrap()).unwrap();
        assert_eq!(
            DevicePublicKey::from_pem(&pem_of(&der[..40])).unwrap_err(),
            KeyError::Unsupported
        );
    }

    #[test]
    fn refuses_a_small_order_ed25519_key() {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        // The identity point: every signature "verifies" against it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        der.extend_from_slice(&identity);
        assert_eq!(
            DevicePublicKey::from_pem(&pem_of(&der)).unwrap_err(),
            KeyError::WeakKey
        );
    }

    #[test]
    fn debug_shows_only_algorithm_and_fingerprint() {
        let key = es256_device().key;
        let debug = format!("{key:?}");
        assert!(debug.contains("Es256") && debug.contains(&key.fingerprint()));
    }
}

/// Keys and signatures as a device would make them with the `openssl` CLI.
mod openssl {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn available() -> bool {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            eprintln!("SKIPPED: openssl is not installed; the openssl interop test did not run");
        }
        found
    }

    fn run(args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out.stdout
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("toaster-core-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, name: &str) -> String {
            self.0.join(name).to_string_lossy().into_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn openssl_fingerprint(public_pem_path: &str) -> String {
        let der = run(&["pkey", "-pubin", "-in", public_pem_path, "-outform", "DER"]);
        Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn check(dir: &TempDir, private_pkcs8: &Path, algorithm: KeyAlgorithm) {
        let public = dir.file("pub.pem");
        let pem = std::fs::read_to_string(&public).unwrap();
        let key = DevicePublicKey::from_pem(&pem).unwrap();
        assert_eq!(key.algorithm(), algorithm);
        assert_eq!(key.to_pem(), pem, "openssl's PEM is already canonical");
        assert_eq!(key.fingerprint(), openssl_fingerprint(&public));

        let private = std::fs::read_to_string(private_pkcs8).unwrap();
        let token = match algorithm {
            KeyAlgorithm::Es256 => ES256KeyPair::from_pem(&private)
                .unwrap()
                .sign(claims(|_| {}))
                .unwrap(),
            KeyAlgorithm::Ed25519 => Ed25519KeyPair::from_pem(&private)
                .unwrap()
                .sign(claims(|_| {}))
                .unwrap(),
        };
        assert!(verify_assertion(&token, &[key], &tenant(), NOW).is_ok());
    }

    #[test]
    fn accepts_keys_made_by_the_openssl_cli() {
        if !available() {
            return;
        }
        let dir = TempDir::new("p256");
        let (k, p8, public) = (dir.file("k.pem"), dir.file("k8.pem"), dir.file("pub.pem"));
        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &k,
        ]);
        run(&["ec", "-in", &k, "-pubout", "-out", &public]);
        run(&["pkcs8", "-topk8", "-nocrypt", "-in", &k, "-out", &p8]);
        check(&dir, Path::new(&p8), KeyAlgorithm::Es256);

        let dir = TempDir::new("ed25519");
        let (k, public) = (dir.file("k.pem"), dir.file("pub.pem"));
        run(&["genpkey", "-algorithm", "ed25519", "-out", &k]);
        run(&["pkey", "-in", &k, "-pubout", "-out", &public]);
        check(&dir, Path::new(&k), KeyAlgorithm::Ed25519);

        let dir = TempDir::new("refused");
        let (p384, rsa, public) = (
            dir.file("p384.pem"),
            dir.file("rsa.pem"),
            dir.file("pub.pem"),
        );
        run(&[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            &p384,
        ]);
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &rsa,
        ]);
        for private in [&p384, &rsa] {
            run(&["pkey", "-in", private, "-pubout", "-out", &public]);
            let pem = std::fs::read_to_string(&public).unwrap();
            assert_eq!(
                DevicePublicKey::from_pem(&pem).unwrap_err(),
                KeyError::Unsupported
            );
        }
    }
}

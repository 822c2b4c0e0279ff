//! DKIM: our signatures verify with mail-auth (the verifier the inbound side uses), against a
//! key served from a resolver cache instead of DNS, and a changed mail does not.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use proptest::prelude::*;

use super::super::*;
use super::headers::hostile_text;
use super::{composer_with, date, offer, text, thread};

const SELECTOR: &str = "sb2026";

/// A 2048-bit RSA key made for these tests only (`openssl genrsa -traditional 2048`).
const RSA_PRIVATE: &str = include_str!("../testdata/dkim-test-rsa.pem");

/// Its public half, as published in DNS (`p=`, SubjectPublicKeyInfo).
const RSA_PUBLIC: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq0d1fe9tteE+O+0KvMkOLW35LJFkSwNYHOEoYKkWgFxB0zm9s9CEvDR/S+sG5wGTCVw185UYqjrJxBBGU17TRqur0mIVQAUBuLqa/z6/oKZ5S7OWeEw/DWVqRPB0ZakiTFSHyJLmrtNRbQBky0Y5dw87bRKbg22tsS4alIDpG2WcrxITFtm4Jl7iImzmI05neGzOw488UsHDY0FANf6rn6qBvYMIqb5j7b592Du53BpwqkE4lZz//RTSUo8sOVvDafxp4QYBpq0t3ku0AXVcIYMUx/4EySy+TnWXQUhLPM7qLPTxHz2jRQqxXiJf6mEtlq69FyDHkGPadAGsnoOWowIDAQAB";

/// An Ed25519 key for these tests (`openssl genpkey -algorithm ed25519`): seed and public key.
const ED25519_SEED: &str = "IDOeZgjN30BtHVi7HvLzpqBlcAlRyPv+hQ6h7cjr8Qs=";
const ED25519_PUBLIC: &str = "LE0gWIooM0bF3O47dy/YUb9K6sTlFlIBJQxfrG0XYqw=";

fn rsa_key() -> DkimKey {
    DkimKey {
        selector: SELECTOR.to_owned(),
        domain: super::DOMAIN.to_owned(),
        algorithm: DkimAlgorithm::Rsa,
        private_key: RSA_PRIVATE.to_owned(),
    }
}

/// A TXT cache holding the test keys: mail-auth asks it before it would ask DNS.
struct Keys(Mutex<HashMap<Box<str>, Txt>>);

impl Keys {
    fn new(record: &str) -> Self {
        let key = DomainKey::parse(record.as_bytes()).expect("a valid key record");
        let name = format!("{SELECTOR}._domainkey.{}.", super::DOMAIN);
        Keys(Mutex::new(HashMap::from([(
            name.into_boxed_str(),
            Txt::from(key),
        )])))
    }
}

impl ResolverCache<Box<str>, Txt> for Keys {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// The DKIM results mail-auth gives `raw`, the key looked up only in `keys`.
async fn verify(raw: &[u8], keys: &Keys) -> Vec<DkimResult> {
    // Building a resolver sends nothing; every lookup is answered from `keys`.
    let authenticator = MessageAuthenticator::new_cloudflare().unwrap();
    let message = AuthenticatedMessage::parse(raw).expect("mail-auth parses our mail");
    authenticator
        .verify_dkim(Parameters::new(&message).with_txt_cache(keys))
        .await
        .into_iter()
        .map(|output| output.result().clone())
        .collect()
}

fn rsa_keys() -> Keys {
    Keys::new(&format!("v=DKIM1; k=rsa; p={RSA_PUBLIC}"))
}

#[tokio::test]
async fn an_rsa_signed_offer_and_thread_mail_verify() {
    let composer = composer_with(Some(rsa_key()), 1_000_000);
    let offer = composer.offer(&offer(), date()).unwrap();
    let mut mail = thread(vec![
        text("Grüße! A line\r\nand another"),
        text("=?utf-8?q?x?="),
    ]);
    mail.earlier = vec![offer.message_id.clone()];
    let follow_up = composer.messages(&mail, date()).unwrap();
    for composed in [offer, follow_up] {
        let raw = String::from_utf8(composed.formatted.clone()).unwrap();
        assert!(
            raw.contains("\r\nDKIM-Signature: v=1; a=rsa-sha256; d=mail.example.org; s=sb2026;"),
            "{raw}"
        );
        assert_eq!(
            verify(&composed.formatted, &rsa_keys()).await,
            [DkimResult::Pass]
        );
    }
}

#[tokio::test]
async fn a_changed_body_or_header_fails_verification() {
    let composer = composer_with(Some(rsa_key()), 1_000_000);
    let composed = composer
        .messages(&thread(vec![text("Please call me at nine")]), date())
        .unwrap();
    let raw = String::from_utf8(composed.formatted).unwrap();
    assert!(raw.contains("nine"));
    for tampered in [
        raw.replace("nine", "ten!"),
        raw.replace("Subject: General support", "Subject: General sport"),
        raw.replace("To: \"Ada Lovelace\"", "To: \"Ada Lovelacf\""),
    ] {
        assert_ne!(tampered, raw);
        // mail-auth reports a changed body as "neutral" (body hash mismatch, RFC 6376
        // §3.7 lets a verifier say so) and a changed header as "fail": neither passes.
        let results = verify(tampered.as_bytes(), &rsa_keys()).await;
        assert!(
            matches!(
                results.as_slice(),
                [DkimResult::Fail(_)
                    | DkimResult::Neutral(mail_auth::Error::Dkim(
                        mail_auth::dkim::DkimError::FailedBodyHashMatch
                    ))]
            ),
            "{results:?}"
        );
    }
    // The same key under another name is not ours: the signature does not verify.
    let other = Keys::new(
        "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwOsW7UFcWn1ch3UM8Mll5qZH5hVHKJQ8Z0tUlebUECq0vjw6VcsIucZ/B70VpCN63whyi7oApdCIS1o0zad7f0UaW/BfxXADqdcFL36uMaG0RHeruSASjQGnsl9Kozt/dXiDZX5ngjr/arLJhNZSNR4/9VSwqbE2OPXaSaQ9BsqneD0P8dCVSfkkDZCcfC2864z7hvC01lFzWQKF36ZAoGBERHScHtFMAzUOgGuqqPiP5khwDQB3Ffccf+BsWLU2OOteshUwTGjpoangbPCYj6kckwNm440lQwuqTinpC92yyIE5Ol8psNMW49DLowAeZb6JrjLhD+wY9bghTaOkcwIDAQAB",
    );
    assert!(matches!(
        verify(raw.as_bytes(), &other).await.as_slice(),
        [DkimResult::Fail(_)]
    ));
}

#[tokio::test]
async fn an_ed25519_signature_verifies() {
    let key = DkimKey {
        algorithm: DkimAlgorithm::Ed25519,
        private_key: ED25519_SEED.to_owned(),
        ..rsa_key()
    };
    let composed = composer_with(Some(key), 0)
        .messages(&thread(vec![text("hi")]), date())
        .unwrap();
    let keys = Keys::new(&format!("v=DKIM1; k=ed25519; p={ED25519_PUBLIC}"));
    assert_eq!(verify(&composed.formatted, &keys).await, [DkimResult::Pass]);
}

#[test]
fn a_bad_key_is_refused_when_the_composer_is_built() {
    let config = |key: DkimKey| ComposerConfig {
        domain: super::DOMAIN.to_owned(),
        from_address: format!("support@{}", super::DOMAIN),
        dkim: Some(key),
        max_attachment_bytes: 0,
    };
    let not_pem = DkimKey {
        private_key: "not a key".to_owned(),
        ..rsa_key()
    };
    assert!(matches!(
        Composer::new(&config(not_pem)),
        Err(ComposeError::DkimKey(_))
    ));
    let bad_selector = DkimKey {
        selector: "a;b=c".to_owned(),
        ..rsa_key()
    };
    assert!(matches!(
        Composer::new(&config(bad_selector)),
        Err(ComposeError::DkimKey(_))
    ));
    // The key never shows in a Debug form.
    assert!(!format!("{:?}", rsa_key()).contains("PRIVATE"));
    let composer = composer_with(Some(rsa_key()), 0);
    let shown = format!("{composer:?}");
    assert!(
        shown.contains("dkim: true") && !shown.contains("Rsa"),
        "{shown}"
    );
}

proptest! {
    // Each case signs with RSA and verifies: fewer cases than the header properties.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn signatures_over_any_headers_verify(
        topic in hostile_text(),
        pseudonym in hostile_text(),
        name in hostile_text(),
        body in hostile_text(),
    ) {
        let mut mail = thread(vec![text(&body)]);
        mail.topic = topic;
        mail.pseudonym = pseudonym;
        mail.responder.name = Some(name);
        let composed = composer_with(Some(rsa_key()), 0).messages(&mail, date()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let results = runtime.block_on(verify(&composed.formatted, &rsa_keys()));
        prop_assert_eq!(results, vec![DkimResult::Pass]);
    }
}

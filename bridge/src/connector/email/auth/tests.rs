//! The checks against a real DNS server: dnsmasq serving `testdata/zone.txt`
//! (`scripts/dns.sh`, started by `scripts/test.sh`, which sets `SWITCHBOARD_TEST_DNS`). Without
//! it these tests fail and say so: a check of SPF/DKIM/DMARC that never met DNS proves nothing.
//!
//! The zone: `responders.test` (SPF 127.0.0.1 only, DMARC p=reject, DKIM selector `sb` with
//! `testdata/dkim-responders-test-rsa.pem`), `quarantine.test` (p=quarantine), `lax.test`
//! (p=none) and `nodmarc.test` (no DMARC record); all allow SPF from 127.0.0.1 only.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Once;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use lettre::message::{Mailbox, Mailboxes};
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use proptest::prelude::*;

use super::*;

/// The test-only DKIM key of `responders.test` (selector `sb`); its public half is in the zone.
const RESPONDERS_KEY: &str = include_str!("testdata/dkim-responders-test-rsa.pem");

/// Where scripts/test.sh's DNS server listens.
fn test_dns() -> SocketAddr {
    let value = std::env::var("SWITCHBOARD_TEST_DNS").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_TEST_DNS is not set: these tests need the test DNS server. scripts/test.sh \
             starts it; by hand: scripts/dns.sh start DIR PORT \
             bridge/src/connector/email/auth/testdata/zone.txt, then export the variables in DIR/env"
        )
    });
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let server = std::env::var("SWITCHBOARD_TEST_DNS_SERVER").unwrap_or_default();
        eprintln!("DNS server: {server} on {value}");
    });
    value
        .parse()
        .unwrap_or_else(|_| panic!("SWITCHBOARD_TEST_DNS is not IP:PORT: {value:?}"))
}

fn authenticator() -> Authenticator {
    Authenticator::new(&[test_dns()]).expect("a resolver for the test DNS server")
}

/// A loopback port nothing listens on (UDP or TCP): bound for a moment, then let go.
fn dead_dns() -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.local_addr().unwrap()
}

/// A reply as a responder's mail program would write it, `From` the given address (or
/// addresses, comma-separated; then `Sender` is the first, as RFC 5322 asks).
fn reply(from: &str) -> Message {
    let from: Vec<Mailbox> = from.parse::<Mailboxes>().unwrap().into();
    let mut builder = Message::builder();
    if from.len() > 1 {
        builder = builder.sender(from[0].clone());
    }
    for mailbox in from {
        builder = builder.from(mailbox);
    }
    builder
        .to("visitor-7f3a@switchboard.example".parse().unwrap())
        .subject("Re: Your question")
        .body("Thanks, we will send it today.\r\n".to_owned())
        .unwrap()
}

/// `reply(from)` DKIM-signed by lettre with the responders.test key (selector `sb`), relaxed
/// canonicalisation as our own composer signs. (lettre's default, `simple` headers, made a
/// signature mail-auth 0.13 finds invalid, though it verifies simple signatures of its own
/// signer, below; not looked into further: our composer signs relaxed.)
fn signed_reply(from: &str) -> Vec<u8> {
    let key = DkimSigningKey::new(RESPONDERS_KEY.trim(), DkimSigningAlgorithm::Rsa).unwrap();
    let config = DkimConfig::new(
        "sb".to_owned(),
        "responders.test".to_owned(),
        key,
        ["From", "Sender", "To", "Subject", "Date"]
            .into_iter()
            .map(HeaderName::new_from_ascii_str)
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    );
    let mut message = reply(from);
    message.sign(&config);
    let raw = message.formatted();
    assert!(
        String::from_utf8_lossy(&raw).contains("DKIM-Signature:"),
        "lettre signed the mail"
    );
    raw
}

fn unsigned_reply(from: &str) -> Vec<u8> {
    reply(from).formatted()
}

fn peer(ip: &str, mail_from: &str) -> SmtpPeer {
    SmtpPeer {
        ip: ip.parse().unwrap(),
        helo: "mail.responders.test".to_owned(),
        mail_from: mail_from.to_owned(),
    }
}

fn replace(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    assert!(text.contains(from), "{from:?} is in the mail");
    text.replacen(from, to, 1).into_bytes()
}

#[tokio::test]
async fn a_reply_signed_by_the_responders_domain_passes_dkim_and_dmarc_and_is_relayed() {
    let verdict = authenticator()
        .check(&signed_reply("Ada <ada@responders.test>"), None)
        .await;
    assert_eq!(verdict.dkim.pass, ["responders.test"]);
    assert_eq!(verdict.dmarc, DmarcOutcome::Pass);
    assert_eq!(verdict.from_address(), Some("ada@responders.test"));
    assert_eq!(verdict.decide(true), Ok(()));
    assert_eq!(
        verdict.summary(),
        "dkim=pass (responders.test) spf=skipped dmarc=pass"
    );
}

#[tokio::test]
async fn a_reply_signed_by_another_signer_with_simple_canonicalisation_passes_too() {
    // Responders' own mail servers sign, not lettre: mail-auth's signer, simple/simple (the
    // strictest canonicalisation), over the unsigned reply.
    let unsigned = unsigned_reply("ada@responders.test");
    // Deprecated for `from_key_der`, which takes rustls-pki-types' key type: not worth a
    // dependency of its own for one test.
    #[allow(deprecated)]
    let key = RsaKey::<Sha256>::from_rsa_pem(RESPONDERS_KEY).unwrap();
    let signature = DkimSigner::from_key(key)
        .domain("responders.test")
        .selector("sb")
        .headers(["From", "To", "Subject", "Date"])
        .header_canonicalization(Canonicalization::Simple)
        .body_canonicalization(Canonicalization::Simple)
        .sign(&unsigned)
        .unwrap();
    let raw = [signature.to_header().into_bytes(), unsigned].concat();
    let verdict = authenticator().check(&raw, None).await;
    assert_eq!(verdict.dkim.pass, ["responders.test"]);
    assert_eq!(verdict.decide(true), Ok(()));
}

#[tokio::test]
async fn a_signed_reply_changed_after_signing_fails_dkim_and_dmarc_and_is_refused() {
    let raw = replace(
        &signed_reply("ada@responders.test"),
        "send it today",
        "send it to me",
    );
    let verdict = authenticator().check(&raw, None).await;
    assert_eq!(verdict.dkim.pass, Vec::<String>::new());
    assert_eq!(verdict.dkim.fail, ["responders.test"]);
    assert_eq!(
        verdict.dmarc,
        DmarcOutcome::Fail {
            policy: Policy::Reject
        }
    );
    assert_eq!(
        verdict.decide(false),
        Err(Refusal::DmarcFail {
            domain: "responders.test".to_owned(),
            policy: Policy::Reject
        })
    );
    assert_eq!(
        verdict.summary(),
        "dkim=fail (responders.test) spf=skipped dmarc=fail p=reject"
    );
}

#[tokio::test]
async fn an_unsigned_reply_from_an_ip_the_spf_record_allows_passes_dmarc_by_spf() {
    let verdict = authenticator()
        .check(
            &unsigned_reply("ada@responders.test"),
            Some(&peer("127.0.0.1", "bounces@responders.test")),
        )
        .await;
    assert_eq!(
        verdict.spf,
        SpfOutcome::Checked {
            result: SpfResult::Pass,
            domain: "responders.test".to_owned()
        }
    );
    assert_eq!(verdict.dmarc, DmarcOutcome::Pass);
    assert_eq!(verdict.decide(true), Ok(()));
    assert_eq!(
        verdict.summary(),
        "dkim=none spf=pass (responders.test) dmarc=pass"
    );
}

#[tokio::test]
async fn an_unsigned_reply_from_another_ip_fails_spf_and_dmarc_and_is_refused() {
    let verdict = authenticator()
        .check(
            &unsigned_reply("ada@responders.test"),
            Some(&peer("10.9.9.9", "bounces@responders.test")),
        )
        .await;
    assert_eq!(
        verdict.spf,
        SpfOutcome::Checked {
            result: SpfResult::Fail,
            domain: "responders.test".to_owned()
        }
    );
    assert!(matches!(
        verdict.decide(false),
        Err(Refusal::DmarcFail {
            policy: Policy::Reject,
            ..
        })
    ));
    assert_eq!(
        verdict.summary(),
        "dkim=none spf=fail (responders.test) dmarc=fail p=reject"
    );
}

#[tokio::test]
async fn an_spf_pass_for_another_domain_than_the_from_domain_does_not_pass_dmarc() {
    // nodmarc.test allows 127.0.0.1 too, but it is not the author's domain.
    let verdict = authenticator()
        .check(
            &unsigned_reply("ada@responders.test"),
            Some(&peer("127.0.0.1", "bounces@nodmarc.test")),
        )
        .await;
    assert_eq!(
        verdict.spf,
        SpfOutcome::Checked {
            result: SpfResult::Pass,
            domain: "nodmarc.test".to_owned()
        }
    );
    assert_eq!(
        verdict.dmarc,
        DmarcOutcome::Fail {
            policy: Policy::Reject
        }
    );
    assert!(verdict.decide(false).is_err());
}

#[tokio::test]
async fn a_failing_reply_from_a_quarantine_domain_is_refused() {
    let verdict = authenticator()
        .check(&unsigned_reply("bob@quarantine.test"), None)
        .await;
    assert_eq!(
        verdict.decide(false),
        Err(Refusal::DmarcFail {
            domain: "quarantine.test".to_owned(),
            policy: Policy::Quarantine
        })
    );
}

#[tokio::test]
async fn a_failing_reply_from_a_p_none_domain_is_relayed_unless_strict() {
    let verdict = authenticator()
        .check(
            &unsigned_reply("cy@lax.test"),
            Some(&peer("10.9.9.9", "cy@lax.test")),
        )
        .await;
    assert_eq!(
        verdict.dmarc,
        DmarcOutcome::Fail {
            policy: Policy::None
        }
    );
    assert_eq!(verdict.decide(false), Ok(()));
    assert_eq!(
        verdict.decide(true),
        Err(Refusal::DmarcFail {
            domain: "lax.test".to_owned(),
            policy: Policy::None
        })
    );
    assert_eq!(
        verdict.summary(),
        "dkim=none spf=fail (lax.test) dmarc=fail p=none"
    );
}

#[tokio::test]
async fn a_reply_from_a_domain_without_dmarc_is_relayed_with_its_spf_failure_logged() {
    let verdict = authenticator()
        .check(
            &unsigned_reply("di@nodmarc.test"),
            Some(&peer("10.9.9.9", "di@nodmarc.test")),
        )
        .await;
    assert_eq!(verdict.dmarc, DmarcOutcome::NoRecord);
    assert_eq!(verdict.decide(true), Ok(()));
    assert_eq!(
        verdict.summary(),
        "dkim=none spf=fail (nodmarc.test) dmarc=none"
    );
}

#[tokio::test]
async fn forged_authentication_results_in_the_mail_change_nothing() {
    let auth = authenticator();
    let honest = unsigned_reply("ada@responders.test");
    let forged = [
        b"Authentication-Results: mx.responders.test; dkim=pass header.d=responders.test; \
          spf=pass smtp.mailfrom=responders.test; dmarc=pass header.from=responders.test\r\n"
            .as_slice(),
        b"ARC-Authentication-Results: i=1; mx.responders.test; dkim=pass; dmarc=pass\r\n",
        &honest,
    ]
    .concat();
    let honest_verdict = auth.check(&honest, None).await;
    let forged_verdict = auth.check(&forged, None).await;
    assert_eq!(forged_verdict, honest_verdict);
    assert!(matches!(
        forged_verdict.decide(false),
        Err(Refusal::DmarcFail { .. })
    ));
}

#[tokio::test]
async fn a_reply_with_several_from_addresses_is_refused_even_when_signed() {
    let auth = authenticator();
    // One field with two addresses, signed by the domain: DMARC passes for the domain, but
    // which of the two wrote it is unknown.
    let two_in_one = signed_reply("ada@responders.test, eve@responders.test");
    let verdict = auth.check(&two_in_one, None).await;
    assert_eq!(verdict.dkim.pass, ["responders.test"]);
    assert_eq!(verdict.from_address(), None);
    assert_eq!(
        verdict.decide(false),
        Err(Refusal::NoSingleAuthor { count: 2 })
    );
    // Two From fields, the second added after signing.
    let two_fields = [
        b"From: eve@responders.test\r\n".as_slice(),
        &signed_reply("ada@responders.test"),
    ]
    .concat();
    let verdict = auth.check(&two_fields, None).await;
    assert_eq!(
        verdict.decide(false),
        Err(Refusal::NoSingleAuthor { count: 2 })
    );
    assert_eq!(verdict.dmarc, DmarcOutcome::NotChecked);
}

#[tokio::test]
async fn a_mail_without_a_from_address_is_refused() {
    let raw = b"To: visitor@switchboard.example\r\nSubject: hi\r\n\r\nhello\r\n";
    let verdict = authenticator().check(raw, None).await;
    assert_eq!(
        verdict.decide(false),
        Err(Refusal::NoSingleAuthor { count: 0 })
    );
    let verdict = authenticator().check(b"", None).await;
    assert_eq!(
        verdict.decide(false),
        Err(Refusal::NoSingleAuthor { count: 0 })
    );
}

#[tokio::test]
async fn an_unreachable_dns_server_means_try_later_not_a_pass_nor_a_refusal() {
    // A short timeout (the default is 5 s, twice, per lookup): nothing will answer anyway.
    let auth = Authenticator::with_timeout(&[dead_dns()], Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    for (raw, peer) in [
        (signed_reply("ada@responders.test"), None),
        (
            unsigned_reply("ada@responders.test"),
            Some(peer("127.0.0.1", "bounces@responders.test")),
        ),
        (unsigned_reply("di@nodmarc.test"), None),
    ] {
        let verdict = auth.check(&raw, peer.as_ref()).await;
        assert_eq!(
            verdict.dmarc,
            DmarcOutcome::TempError,
            "{}",
            verdict.summary()
        );
        assert_eq!(verdict.decide(false), Err(Refusal::TryLater));
        assert_eq!(verdict.decide(true), Err(Refusal::TryLater));
    }
    eprintln!(
        "three checks with no DNS server took {:?}",
        started.elapsed()
    );
}

#[test]
fn decide_refuses_a_from_address_without_a_domain_and_a_verdict_never_checked() {
    let verdict = Verdict {
        from: vec!["ada".to_owned()],
        dkim: DkimOutcome::default(),
        spf: SpfOutcome::NotChecked,
        dmarc: DmarcOutcome::NotChecked,
    };
    assert_eq!(
        verdict.decide(false),
        Err(Refusal::AuthorWithoutDomain {
            address: "ada".to_owned()
        })
    );
    let verdict = Verdict {
        from: vec!["ada@responders.test".to_owned()],
        ..verdict
    };
    assert!(verdict.decide(false).is_err());
}

#[test]
fn the_authenticator_can_be_shared_between_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Authenticator>();
    // `check`'s future too: the connector runs it in spawned tasks.
    fn sendable<T: Send>(_: &T) {}
    let auth = Authenticator::new(&[dead_dns()]).unwrap();
    sendable(&auth.check(b"", None));
}

/// Mail-shaped bytes: header lines that matter here (From, DKIM-Signature, ...), with values
/// built from pieces that look like their syntax, then a body.
fn mail_like() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "From",
        "from",
        "DKIM-Signature",
        "Authentication-Results",
        "To",
        "Subject",
        " ",
        "",
    ]);
    let piece = prop::sample::select(vec![
        "a@responders.test",
        "@",
        ",",
        "<",
        ">",
        ";",
        "v=1",
        " d=responders.test",
        " s=sb",
        " a=rsa-sha256",
        " bh=",
        " b=AAAA",
        " h=from",
        " l=5",
        "=?utf-8?b?w6k=?=",
        "\"",
        "(",
        ")",
        ":",
        "\r\n",
        "\r\n ",
        "\n",
        "\u{e9}",
        "\0",
    ]);
    let header = (name, prop::collection::vec(piece, 0..12))
        .prop_map(|(name, pieces)| format!("{name}:{}\r\n", pieces.concat()));
    (
        prop::collection::vec(header, 0..6),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(headers, body)| {
            [headers.concat().into_bytes(), b"\r\n".to_vec(), body].concat()
        })
}

proptest! {
    // Against the test zone, so a From or a DKIM-Signature naming responders.test meets its
    // real records and key. Each case asks DNS a few times.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_bytes_give_a_verdict_and_never_a_panic(
        raw in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), mail_like()],
        with_peer in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let auth = authenticator();
        // Not an address responders.test's SPF allows: nothing here may pass DMARC.
        let peer = with_peer.then(|| peer("10.9.9.9", "x@responders.test"));
        let verdict = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), auth.check(&raw, peer.as_ref())).await
        }).expect("a check ends");
        let _ = verdict.decide(false);
        prop_assert!(verdict.summary().starts_with("dkim="));
        // Nothing unauthenticated is relayed as a pass.
        prop_assert_ne!(verdict.dmarc, DmarcOutcome::Pass);
    }
}

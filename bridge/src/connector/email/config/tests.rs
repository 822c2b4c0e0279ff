use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// An Ed25519 key made for tests only (`openssl genpkey -algorithm ed25519`): the seed.
const ED25519_SEED: &str = "IDOeZgjN30BtHVi7HvLzpqBlcAlRyPv+hQ6h7cjr8Qs=";

fn no_env(_: &str) -> Option<String> {
    None
}

fn read(section: &Value) -> Result<EmailConfig, String> {
    EmailConfig::read_with_env(section, no_env)
}

/// Every required field, nothing optional.
fn minimal() -> Value {
    json!({
        "domain": "mail.example.org",
        "from_address": "support@example.org",
        "smtp": { "host": "smtp.example.org", "port": 587, "security": "starttls" },
        "imap": {
            "host": "imap.example.org", "port": 993, "security": "tls",
            "username": "support@example.org", "password": "imap-secret-1",
        },
    })
}

fn without(mut section: Value, path: &[&str]) -> Value {
    let (last, parents) = path.split_last().expect("a path");
    let mut table = &mut section;
    for key in parents {
        table = table.get_mut(*key).expect("the table exists");
    }
    table.as_object_mut().expect("a table").remove(*last);
    section
}

fn with(mut section: Value, path: &[&str], value: Value) -> Value {
    let (last, parents) = path.split_last().expect("a path");
    let mut table = &mut section;
    for key in parents {
        table = table.get_mut(*key).expect("the table exists");
    }
    table
        .as_object_mut()
        .expect("a table")
        .insert((*last).to_owned(), value);
    section
}

fn key_file(content: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), content).expect("the key is written");
    file
}

#[test]
fn a_full_section_is_read_field_by_field() {
    let key = key_file(&format!("{ED25519_SEED}\n"));
    let section = json!({
        "domain": "mail.example.org",
        "from_address": "support@example.org",
        "batch_window_secs": 8,
        "max_attachment_bytes": 5_000_000,
        "smtp": {
            "host": "smtp.example.org", "port": 465, "security": "tls",
            "username": "relay@example.org", "password": "smtp-secret-1",
        },
        "imap": {
            "host": "imap.example.org", "port": 143, "security": "starttls",
            "username": "support@example.org", "password": "imap-secret-1",
            "mailbox": "Switchboard",
        },
        "dkim": {
            "selector": "sb2026",
            "key_file": key.path().to_str().unwrap(),
            "algorithm": "ed25519",
        },
    });
    let config = read(&section).expect("a valid section");
    assert_eq!(config.domain, "mail.example.org");
    assert_eq!(config.from_address, "support@example.org");
    assert_eq!(config.batch_window, Duration::from_secs(8));
    assert_eq!(config.max_attachment_bytes, 5_000_000);
    assert_eq!(
        config.smtp,
        SmtpSettings {
            host: "smtp.example.org".into(),
            port: 465,
            security: Security::Tls,
            credentials: Some(Login {
                username: "relay@example.org".into(),
                password: Secret::new("smtp-secret-1"),
            }),
        }
    );
    assert_eq!(
        config.imap.clone().expect("an IMAP mailbox"),
        ImapSettings {
            host: "imap.example.org".into(),
            port: 143,
            security: Security::StartTls,
            login: Login {
                username: "support@example.org".into(),
                password: Secret::new("imap-secret-1"),
            },
            mailbox: "Switchboard".into(),
        }
    );
    let dkim = config.dkim.as_ref().expect("a DKIM key");
    assert_eq!(dkim.selector, "sb2026");
    assert_eq!(dkim.algorithm, DkimAlgorithm::Ed25519);
    assert_eq!(dkim.private_key.trim(), ED25519_SEED);
    assert_eq!(
        dkim.domain, "example.org",
        "d= is From's domain, so DMARC aligns"
    );

    let composer = config.composer_config();
    assert_eq!(composer.domain, "mail.example.org");
    assert_eq!(composer.from_address, "support@example.org");
    assert_eq!(composer.max_attachment_bytes, 5_000_000);
    assert!(composer.dkim.is_some());
    Composer::new(&composer).expect("the composer accepts what the configuration accepted");
}

#[test]
fn optional_fields_take_their_defaults() {
    let config = read(&minimal()).expect("a valid section");
    assert_eq!(config.batch_window, Duration::from_secs(5));
    assert_eq!(config.max_attachment_bytes, 10 * 1024 * 1024);
    assert_eq!(config.imap.as_ref().unwrap().mailbox, "INBOX");
    assert_eq!(config.smtp.credentials, None, "no AUTH without a username");
    assert!(config.dkim.is_none());
    assert!(config.composer_config().dkim.is_none());
}

#[test]
fn initiators_are_off_by_default_and_topic_addresses_need_them() {
    let config = read(&minimal()).unwrap();
    assert!(!config.initiators);
    assert!(config.topic_addresses.is_empty());
    let on = with(minimal(), &["initiators"], json!(true));
    let config = read(&with(
        on.clone(),
        &["topic_addresses"],
        json!({ "billing": "Invoices@Example.org" }),
    ))
    .unwrap();
    assert!(config.initiators);
    assert_eq!(
        config.topic_addresses,
        vec![("billing".to_owned(), "invoices@example.org".to_owned())]
    );
    let e = read(&with(
        minimal(),
        &["topic_addresses"],
        json!({ "billing": "invoices@example.org" }),
    ))
    .unwrap_err();
    assert!(e.contains("email.initiators"), "{e}");
    let e = read(&with(
        on.clone(),
        &["topic_addresses"],
        json!({ "billing": "not an address" }),
    ))
    .unwrap_err();
    assert!(e.contains("email.topic_addresses.billing"), "{e}");
    let e = read(&with(minimal(), &["initiators"], json!("yes"))).unwrap_err();
    assert!(e.contains("email.initiators must be true or false"), "{e}");
}

#[test]
fn a_zero_batch_window_sends_each_line_at_once() {
    let config = read(&with(minimal(), &["batch_window_secs"], json!(0))).unwrap();
    assert_eq!(config.batch_window, Duration::ZERO);
}

#[test]
fn each_missing_required_field_is_named_with_its_path() {
    for path in [
        &["domain"][..],
        &["from_address"],
        &["smtp"],
        &["smtp", "host"],
        &["smtp", "port"],
        &["smtp", "security"],
        &["imap", "host"],
        &["imap", "port"],
        &["imap", "security"],
        &["imap", "username"],
        &["imap", "password"],
    ] {
        let error = read(&without(minimal(), path)).expect_err("a required field is missing");
        let name = format!("email.{}", path.join("."));
        assert!(
            error.contains(&format!("{name} is missing")),
            "{name}: the error does not say so: {error}"
        );
    }
}

#[test]
fn replies_must_have_a_way_in() {
    let error = read(&without(minimal(), &["imap"])).unwrap_err();
    assert!(error.contains("no way for replies to come in"), "{error}");
    let listener = with(
        without(minimal(), &["imap"]),
        &["listener"],
        json!({ "address": "127.0.0.1:2525" }),
    );
    let config = read(&listener).expect("the listener alone is a way in");
    assert_eq!(
        config.listener.expect("a listener").address,
        "127.0.0.1:2525".parse().unwrap()
    );
    let bad = with(minimal(), &["listener"], json!({ "address": "localhost" }));
    assert!(read(&bad).unwrap_err().contains("email.listener.address"));
    let short = with(minimal(), &["http"], json!({ "token": "short" }));
    assert!(read(&short).unwrap_err().contains("at least 24"));
    let http = with(
        without(minimal(), &["imap"]),
        &["http"],
        json!({ "token": "a-long-enough-random-token-123" }),
    );
    assert!(
        read(&http)
            .expect("HTTP alone is a way in")
            .http_token
            .is_some()
    );
    let auth = with(
        minimal(),
        &["authentication"],
        json!({ "nameservers": ["127.0.0.1:5353"], "strict": true }),
    );
    let auth = read(&auth).unwrap().authentication;
    assert_eq!(auth.nameservers, ["127.0.0.1:5353".parse().unwrap()]);
    assert!(auth.strict);
    let bad = with(
        minimal(),
        &["authentication"],
        json!({ "nameservers": ["dns.example"] }),
    );
    assert!(
        read(&bad)
            .unwrap_err()
            .contains("email.authentication.nameservers")
    );
}

#[test]
fn a_dkim_table_needs_its_selector_and_key_file() {
    let key = key_file(ED25519_SEED);
    let dkim = json!({ "selector": "sb", "key_file": key.path().to_str().unwrap(), "algorithm": "ed25519" });
    for field in ["selector", "key_file"] {
        let section = with(minimal(), &["dkim"], dkim.clone());
        let error = read(&without(section, &["dkim", field])).unwrap_err();
        assert_eq!(error, format!("email.dkim.{field} is missing"));
    }
}

#[test]
fn a_blank_string_counts_as_missing() {
    let error = read(&with(minimal(), &["smtp", "host"], json!("  "))).unwrap_err();
    assert_eq!(error, "email.smtp.host is missing");
}

#[test]
fn a_security_value_outside_the_three_is_refused_with_the_choices() {
    for value in ["ssl", "TLS", "start-tls"] {
        let error = read(&with(minimal(), &["smtp", "security"], json!(value))).unwrap_err();
        assert!(error.starts_with("email.smtp.security"), "{error}");
        assert!(error.contains("\"none\", \"starttls\", \"tls\""), "{error}");
    }
    // Like every string, it is trimmed.
    let ok = with(minimal(), &["imap", "security"], json!(" none "));
    assert_eq!(read(&ok).unwrap().imap.unwrap().security, Security::None);
}

#[test]
fn ports_must_be_between_1_and_65535() {
    for bad in [
        json!(0),
        json!(65536),
        json!(-25),
        json!("smtp"),
        json!(true),
    ] {
        let error = read(&with(minimal(), &["smtp", "port"], bad.clone())).unwrap_err();
        assert!(
            error.starts_with("email.smtp.port must be"),
            "{bad}: {error}"
        );
    }
    // From the environment, figment may hand a port over as a string.
    let config = read(&with(minimal(), &["smtp", "port"], json!("2525"))).unwrap();
    assert_eq!(config.smtp.port, 2525);
}

#[test]
fn an_unknown_field_is_refused_rather_than_ignored() {
    let error = read(&with(minimal(), &["smtp", "pasword"], json!("x"))).unwrap_err();
    assert!(
        error.starts_with("email.smtp.pasword is not a known field"),
        "{error}"
    );
    let error = read(&with(minimal(), &["public_url"], json!("https://x"))).unwrap_err();
    assert!(
        error.starts_with("email.public_url is not a known field"),
        "{error}"
    );
}

#[test]
fn a_username_without_a_password_or_the_reverse_is_refused() {
    let section = with(minimal(), &["smtp", "username"], json!("relay@example.org"));
    let error = read(&section).unwrap_err();
    assert!(
        error
            .starts_with("email.smtp.password is missing (or set SWITCHBOARD_EMAIL_SMTP_PASSWORD)"),
        "{error}"
    );
    let section = with(minimal(), &["smtp", "password"], json!("smtp-secret-1"));
    let error = read(&section).unwrap_err();
    assert!(
        error.starts_with("email.smtp.username is missing"),
        "{error}"
    );
    assert!(!error.contains("smtp-secret-1"), "{error}");
}

#[test]
fn the_environment_overrides_the_passwords_of_the_file() {
    let section = with(minimal(), &["smtp", "username"], json!("relay@example.org"));
    let section = with(section, &["smtp", "password"], json!("from-the-file"));
    let env = |name: &str| match name {
        "SWITCHBOARD_EMAIL_SMTP_PASSWORD" => Some("smtp-from-env".to_owned()),
        "SWITCHBOARD_EMAIL_IMAP_PASSWORD" => Some("imap-from-env".to_owned()),
        _ => None,
    };
    let config = EmailConfig::read_with_env(&section, env).unwrap();
    let smtp = config.smtp.credentials.expect("SMTP credentials");
    assert_eq!(smtp.password.expose(), "smtp-from-env");
    assert_eq!(
        config.imap.as_ref().unwrap().login.password.expose(),
        "imap-from-env"
    );

    // Only from the environment: the file need not hold the password at all.
    let section = without(minimal(), &["imap", "password"]);
    let imap_only = |name: &str| env(name).filter(|_| name == IMAP_PASSWORD_ENV);
    let config = EmailConfig::read_with_env(&section, imap_only).unwrap();
    assert_eq!(
        config.imap.as_ref().unwrap().login.password.expose(),
        "imap-from-env"
    );

    // A password from the environment for an SMTP server with no username is a mistake.
    let error = EmailConfig::read_with_env(&minimal(), env).unwrap_err();
    assert!(
        error.starts_with("email.smtp.username is missing"),
        "{error}"
    );
    assert!(!error.contains("smtp-from-env"), "{error}");

    // An empty variable is no override.
    let empty = |_: &str| Some(String::new());
    let config = EmailConfig::read_with_env(&minimal(), empty).unwrap();
    assert_eq!(
        config.imap.as_ref().unwrap().login.password.expose(),
        "imap-secret-1"
    );
}

#[test]
fn debug_prints_neither_the_passwords_nor_the_key() {
    let key = key_file(ED25519_SEED);
    let section = with(minimal(), &["smtp", "username"], json!("relay@example.org"));
    let section = with(section, &["smtp", "password"], json!("smtp-secret-1"));
    let section = with(
        section,
        &["dkim"],
        json!({ "selector": "sb", "key_file": key.path().to_str().unwrap(), "algorithm": "ed25519" }),
    );
    let config = read(&section).unwrap();
    for printed in [format!("{config:?}"), format!("{config:#?}")] {
        for secret in ["smtp-secret-1", "imap-secret-1", ED25519_SEED, "IDOeZgjN"] {
            assert!(
                !printed.contains(secret),
                "Debug printed {secret}: {printed}"
            );
        }
        assert!(printed.contains("relay@example.org"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}

#[test]
fn an_unreadable_key_file_fails_at_start_up_naming_the_file() {
    let dkim = json!({ "selector": "sb", "key_file": "/nonexistent/dkim.pem" });
    let error = read(&with(minimal(), &["dkim"], dkim)).unwrap_err();
    assert!(
        error.starts_with("email.dkim.key_file /nonexistent/dkim.pem: cannot read it"),
        "{error}"
    );
}

#[test]
fn a_key_file_that_holds_no_key_of_the_algorithm_fails_without_quoting_it() {
    // An Ed25519 seed where an RSA PEM is expected (the default algorithm).
    let key = key_file(ED25519_SEED);
    let dkim = json!({ "selector": "sb", "key_file": key.path().to_str().unwrap() });
    let error = read(&with(minimal(), &["dkim"], dkim)).unwrap_err();
    assert!(
        error.starts_with("email.dkim: the key is not usable"),
        "{error}"
    );
    assert!(!error.contains("IDOeZgjN"), "{error}");

    let empty = key_file("\n");
    let dkim = json!({ "selector": "sb", "key_file": empty.path().to_str().unwrap() });
    let error = read(&with(minimal(), &["dkim"], dkim)).unwrap_err();
    assert!(error.ends_with("is empty"), "{error}");

    let dkim = json!({ "selector": "sb", "key_file": "/x", "algorithm": "dsa" });
    let error = read(&with(minimal(), &["dkim"], dkim)).unwrap_err();
    assert!(error.starts_with("email.dkim.algorithm \"dsa\""), "{error}");
}

#[test]
fn a_bad_domain_or_from_address_is_named_as_the_configuration_names_it() {
    let error = read(&with(minimal(), &["domain"], json!("not a domain"))).unwrap_err();
    assert!(error.starts_with("email.domain"), "{error}");
    let error = read(&with(minimal(), &["from_address"], json!("support"))).unwrap_err();
    assert!(error.starts_with("email.from_address"), "{error}");
}

#[test]
fn a_batch_window_over_five_minutes_is_refused() {
    let error = read(&with(minimal(), &["batch_window_secs"], json!(301))).unwrap_err();
    assert!(error.starts_with("email.batch_window_secs"), "{error}");
}

#[test]
fn a_section_that_is_not_a_table_is_refused() {
    assert_eq!(read(&json!("yes")).unwrap_err(), "email must be a table");
    let error = read(&with(minimal(), &["smtp"], json!(25))).unwrap_err();
    assert_eq!(error, "email.smtp must be a table");
}

//! The sender against a scripted SMTP server on a loopback port: each test makes the server
//! answer one way and checks what the caller is told. lettre's errors cannot be built outside
//! lettre, so these are the real errors its client returns for those answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::connector::email::compose::{Composer, ComposerConfig, OfferMail, Recipient};
use crate::connector::email::config::{Login, Secret};

const PASSWORD: &str = "hunter2-smtp-secret";

/// How the scripted server answers each command (a reply is one or more whole lines).
#[derive(Clone)]
struct Script {
    greeting: &'static str,
    ehlo: &'static str,
    auth: &'static str,
    mail: &'static str,
    rcpt: &'static str,
    /// The answer after the data's final dot.
    accepted: &'static str,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "220 stub ESMTP\r\n",
            ehlo: "250-stub\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
            auth: "235 2.7.0 ok\r\n",
            mail: "250 2.1.0 ok\r\n",
            rcpt: "250 2.1.5 ok\r\n",
            accepted: "250 2.0.0 queued\r\n",
        }
    }
}

/// What the scripted server saw.
#[derive(Default)]
struct Seen {
    commands: Vec<String>,
    data: Vec<u8>,
}

async fn scripted_server(script: Script) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write.write_all(script.greeting.as_bytes()).await.unwrap();
        if !script.greeting.starts_with('2') {
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            log.lock()
                .unwrap()
                .commands
                .push(line.trim_end().to_owned());
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            let reply = match verb.as_str() {
                "EHLO" | "HELO" => script.ehlo,
                "AUTH" => script.auth,
                "MAIL" => script.mail,
                "RCPT" => script.rcpt,
                "DATA" => {
                    write.write_all(b"354 go ahead\r\n").await.unwrap();
                    let mut data = Vec::new();
                    loop {
                        let mut data_line = Vec::new();
                        if read.read_until(b'\n', &mut data_line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if data_line == b".\r\n" {
                            break;
                        }
                        data.extend_from_slice(&data_line);
                    }
                    log.lock().unwrap().data = data;
                    script.accepted
                }
                "QUIT" => {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                }
                _ => "250 ok\r\n",
            };
            if write.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    (port, seen)
}

fn settings(port: u16, security: Security, with_login: bool) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security,
        credentials: with_login.then(|| Login {
            username: "relay@example.org".into(),
            password: Secret::new(PASSWORD),
        }),
    }
}

fn sender(port: u16) -> Sender {
    Sender::new(&settings(port, Security::None, true)).unwrap()
}

fn composed() -> Composed {
    let composer = Composer::new(&ComposerConfig {
        domain: "mail.example.org".into(),
        from_address: "support@example.org".into(),
        dkim: None,
        max_attachment_bytes: 1024,
    })
    .unwrap();
    composer
        .offer(
            &OfferMail {
                responder: Recipient {
                    address: "alice@example.net".into(),
                    name: Some("Alice".into()),
                },
                topic: "General support".into(),
                pseudonym: "Visitor 7F3A".into(),
                language: None,
                // A line starting with a dot: SMTP must stuff it, and the server unstuff it.
                first_message: Some("Hello\n.hidden dot line\nbye".into()),
                summary: None,
                accept_url: "https://chat.example.org/accept/abc".into(),
                decline_url: "https://chat.example.org/decline/abc".into(),
                reply_token: "tok123".into(),
                key: None,
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap()
}

/// The data as the server saw it, with SMTP's dot-stuffing undone.
fn unstuffed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

fn expect_transient(result: Result<(), ConnectorError>) -> String {
    match result {
        Err(ConnectorError::Transient(text)) => text,
        other => panic!("expected a transient error, got {other:?}"),
    }
}

fn expect_permanent(result: Result<(), ConnectorError>) -> String {
    match result {
        Err(ConnectorError::Permanent(text)) => text,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_accepted_mail_goes_out_as_composed_with_the_bounce_envelope() {
    let (port, seen) = scripted_server(Script::default()).await;
    let mail = composed();
    sender(port)
        .send(&mail)
        .await
        .expect("the mail is accepted");

    let seen = seen.lock().unwrap();
    let from = mail
        .envelope
        .from()
        .expect("an envelope sender")
        .to_string();
    assert!(from.starts_with("bounce+"), "{from}");
    assert!(
        seen.commands
            .iter()
            .any(|c| c.starts_with(&format!("MAIL FROM:<{from}>"))),
        "{:?}",
        seen.commands
    );
    assert!(
        seen.commands
            .contains(&"RCPT TO:<alice@example.net>".to_owned()),
        "{:?}",
        seen.commands
    );
    assert!(seen.commands.iter().any(|c| c.starts_with("AUTH PLAIN")));
    let data = unstuffed(&seen.data);
    // lettre ends the data with CRLF . CRLF even after a final CRLF, so one line more.
    let data = data.strip_suffix(b"\r\n").unwrap_or(&data);
    assert_eq!(
        String::from_utf8_lossy(data),
        String::from_utf8_lossy(&mail.formatted),
        "the bytes sent are the composed bytes"
    );
}

#[tokio::test]
async fn a_4xx_answer_is_transient_and_names_the_code() {
    let (port, _) = scripted_server(Script {
        rcpt: "451 4.3.0 try again later\r\n",
        ..Script::default()
    })
    .await;
    let text = expect_transient(sender(port).send(&composed()).await);
    assert!(text.contains("451"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}

#[tokio::test]
async fn a_421_greeting_is_transient() {
    let (port, _) = scripted_server(Script {
        greeting: "421 4.3.2 shutting down\r\n",
        ..Script::default()
    })
    .await;
    expect_transient(sender(port).send(&composed()).await);
}

#[tokio::test]
async fn a_5xx_answer_to_the_recipient_is_permanent() {
    let (port, _) = scripted_server(Script {
        rcpt: "550 5.1.1 no such user\r\n",
        ..Script::default()
    })
    .await;
    let text = expect_permanent(sender(port).send(&composed()).await);
    assert!(
        text.contains("550") && text.contains("no such user"),
        "{text}"
    );
}

#[tokio::test]
async fn a_5xx_after_the_data_is_permanent() {
    let (port, _) = scripted_server(Script {
        accepted: "554 5.7.1 rejected as spam\r\n",
        ..Script::default()
    })
    .await;
    expect_permanent(sender(port).send(&composed()).await);
}

#[tokio::test]
async fn a_mail_refused_as_too_big_is_file_too_large_not_permanent() {
    for answer in [
        "552 5.3.4 message too big\r\n",
        "552 5.2.3 over the limit\r\n",
    ] {
        let (port, _) = scripted_server(Script {
            accepted: answer,
            ..Script::default()
        })
        .await;
        match sender(port).send(&composed()).await {
            Err(ConnectorError::FileTooLarge(text)) => assert!(text.contains("552"), "{text}"),
            other => panic!("{answer:?}: expected FileTooLarge, got {other:?}"),
        }
    }
    // A full mailbox is a 552 too, but not about size.
    let (port, _) = scripted_server(Script {
        rcpt: "552 5.2.2 mailbox full\r\n",
        ..Script::default()
    })
    .await;
    expect_permanent(sender(port).send(&composed()).await);
}

#[tokio::test]
async fn refused_credentials_are_permanent_and_the_password_never_shows() {
    // A careless server that quotes what it was sent.
    let echo: &'static str = Box::leak(
        format!(
            "535 5.7.8 bad credentials {PASSWORD} {}\r\n",
            BASE64.encode(format!("\0relay@example.org\0{PASSWORD}"))
        )
        .into_boxed_str(),
    );
    let (port, _) = scripted_server(Script {
        auth: echo,
        ..Script::default()
    })
    .await;
    let text = expect_permanent(sender(port).send(&composed()).await);
    assert!(text.contains("535"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains(&BASE64.encode(PASSWORD)[..12]), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[tokio::test]
async fn starttls_required_but_not_offered_fails_before_the_password_is_sent() {
    let (port, seen) = scripted_server(Script::default()).await;
    let sender = Sender::new(&settings(port, Security::StartTls, true)).unwrap();
    let result = sender.send(&composed()).await;
    assert!(
        matches!(result, Err(ConnectorError::Permanent(_))),
        "{result:?}"
    );
    let seen = seen.lock().unwrap();
    assert!(
        !seen.commands.iter().any(|c| c.starts_with("AUTH")),
        "no AUTH over a connection STARTTLS did not protect: {:?}",
        seen.commands
    );
}

#[tokio::test]
async fn a_closed_port_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    expect_transient(sender(port).send(&composed()).await);
}

#[tokio::test]
async fn a_server_that_never_answers_is_transient_after_the_send_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await
    });
    let sender = Sender::with_timeouts(
        &settings(port, Security::None, false),
        Duration::from_secs(5),
        Duration::from_millis(300),
    )
    .unwrap();
    let text = expect_transient(sender.send(&composed()).await);
    assert!(text.contains("no answer"), "{text}");
    silent.abort();
}

#[tokio::test]
async fn without_credentials_no_auth_is_attempted() {
    let (port, seen) = scripted_server(Script::default()).await;
    let sender = Sender::new(&settings(port, Security::None, false)).unwrap();
    sender.send(&composed()).await.unwrap();
    assert!(
        !seen
            .lock()
            .unwrap()
            .commands
            .iter()
            .any(|c| c.starts_with("AUTH"))
    );
}

#[test]
fn debug_names_the_server_and_nothing_of_the_login() {
    let sender = Sender::new(&settings(2525, Security::None, true)).unwrap();
    let printed = format!("{sender:?}");
    assert!(printed.contains("127.0.0.1:2525"), "{printed}");
    assert!(
        !printed.contains(PASSWORD) && !printed.contains("relay@"),
        "{printed}"
    );
}

#[test]
fn tls_settings_build_without_connecting() {
    for security in [Security::Tls, Security::StartTls] {
        let settings = SmtpSettings {
            host: "smtp.example.org".into(),
            ..settings(465, security, true)
        };
        Sender::new(&settings).expect("a sender");
    }
}

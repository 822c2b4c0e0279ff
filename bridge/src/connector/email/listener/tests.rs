//! The listener on a loopback port against real clients: lettre (the SMTP client the
//! connector itself sends with), raw pipelined sessions over a `TcpStream`, and Python's
//! `smtplib` when `python3` is there. Each test checks what the sender was told and exactly
//! what the handler got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

/// How the test handler answers every mail.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Transient,
    Permanent,
}

type Calls = Arc<Mutex<Vec<(Envelope, Vec<u8>)>>>;

struct Running {
    port: u16,
    /// Every call of the handler, whatever it answered.
    calls: Calls,
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

fn config() -> ListenerConfig {
    ListenerConfig {
        max_message_bytes: 10_000,
        idle_timeout: Duration::from_secs(30),
        ..ListenerConfig::new("support.example", "mx.support.test")
    }
}

async fn start(config: ListenerConfig, answer: Answer) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Calls::default();
    let log = Arc::clone(&calls);
    let handler = move |envelope: Envelope, bytes: Vec<u8>| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push((envelope, bytes));
            match answer {
                Answer::Ok => Ok(()),
                Answer::Transient => Err(HandlerError::Transient("store unreachable".into())),
                Answer::Permanent => Err(HandlerError::Permanent("not a mail".into())),
            }
        }
    };
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(serve(listener, config, handler, shutdown));
    Running {
        port,
        calls,
        stop,
        task,
    }
}

impl Running {
    fn calls(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.calls.lock().unwrap().clone()
    }
}

fn lettre_client(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .hello_name(ClientId::Domain("client.test".into()))
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn lettre_envelope(from: Option<&str>, to: &[&str]) -> lettre::address::Envelope {
    lettre::address::Envelope::new(
        from.map(|f| f.parse().unwrap()),
        to.iter().map(|t| t.parse().unwrap()).collect(),
    )
    .unwrap()
}

/// Writes `input` in one write, then reads everything until the server closes.
async fn raw_session(port: u16, input: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(input).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8(received).unwrap()
}

/// The code of each reply in a transcript (a multi-line reply counts once).
fn reply_codes(transcript: &str) -> Vec<u16> {
    transcript
        .split("\r\n")
        .filter(|line| line.as_bytes().get(3) == Some(&b' '))
        .map(|line| line[..3].parse().unwrap())
        .collect()
}

const MAIL: &[u8] = b"From: Ann <ann@example.org>\r\nTo: tok@support.example\r\n\
    Subject: Hello\r\nMessage-ID: <1@example.org>\r\n\r\nFirst line\r\n\
    .a line starting with a dot\r\n..two dots\r\n.\r\nlast line";

#[tokio::test]
async fn a_mail_sent_with_lettre_reaches_the_handler_byte_for_byte() {
    let server = start(config(), Answer::Ok).await;
    let response = lettre_client(server.port)
        .send_raw(
            &lettre_envelope(Some("ann@example.org"), &["Tok.AbC@Support.Example"]),
            MAIL,
        )
        .await
        .unwrap();
    assert_eq!(response.code().to_string(), "250");

    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    let (envelope, bytes) = &calls[0];
    // lettre dot-stuffed the dotted lines and ended the text with CRLF . CRLF: the handler
    // gets the mail as written, its last line ended with CRLF.
    assert_eq!(bytes, &[MAIL, b"\r\n"].concat());
    assert_eq!(envelope.helo, "client.test");
    assert_eq!(envelope.mail_from, "ann@example.org");
    assert_eq!(envelope.rcpt_to, ["Tok.AbC@Support.Example"]);
    assert!(envelope.peer.ip().is_loopback());
}

#[tokio::test]
async fn a_bounce_with_the_null_sender_is_accepted() {
    let server = start(config(), Answer::Ok).await;
    lettre_client(server.port)
        .send_raw(
            &lettre_envelope(None, &["tok@support.example"]),
            b"Subject: bounce\r\n\r\nx",
        )
        .await
        .unwrap();
    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0.mail_from, "");
}

#[tokio::test]
async fn a_transient_handler_failure_tells_the_sender_to_retry() {
    let server = start(config(), Answer::Transient).await;
    let error = lettre_client(server.port)
        .send_raw(
            &lettre_envelope(Some("a@example.org"), &["t@support.example"]),
            MAIL,
        )
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.status().unwrap().to_string(), "451");
    // The handler was asked, but the sender holds on to the mail.
    assert_eq!(server.calls().len(), 1);
}

#[tokio::test]
async fn a_permanent_handler_failure_tells_the_sender_to_give_up() {
    let server = start(config(), Answer::Permanent).await;
    let error = lettre_client(server.port)
        .send_raw(
            &lettre_envelope(Some("a@example.org"), &["t@support.example"]),
            MAIL,
        )
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(error.status().unwrap().to_string(), "554");
    let text = error.to_string();
    assert!(
        !text.contains("not a mail"),
        "the handler's text stays inside: {text}"
    );
}

#[tokio::test]
async fn mail_for_another_domain_is_relay_denied_and_never_handed_over() {
    let server = start(config(), Answer::Ok).await;
    let error = lettre_client(server.port)
        .send_raw(
            &lettre_envelope(Some("a@example.org"), &["victim@elsewhere.example"]),
            MAIL,
        )
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(error.status().unwrap().to_string(), "550");
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn a_mail_over_the_size_limit_gets_552_and_is_not_handed_over() {
    let server = start(
        ListenerConfig {
            max_message_bytes: 100,
            ..config()
        },
        Answer::Ok,
    )
    .await;
    let big = [b"Subject: big\r\n\r\n".as_slice(), &[b'x'; 200]].concat();
    let error = lettre_client(server.port)
        .send_raw(
            &lettre_envelope(Some("a@example.org"), &["t@support.example"]),
            &big,
        )
        .await
        .unwrap_err();
    assert_eq!(error.status().unwrap().to_string(), "552");
    assert!(server.calls().is_empty());

    // One declaring its size is refused at MAIL, before any text is sent.
    let transcript = raw_session(
        server.port,
        b"EHLO raw.test\r\nMAIL FROM:<a@example.org> SIZE=101\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(reply_codes(&transcript), [220, 250, 552, 221]);
    assert!(transcript.contains("250-SIZE 100\r\n"), "{transcript}");
}

#[tokio::test]
async fn a_pipelined_session_in_one_write_gets_every_reply_in_order() {
    let server = start(config(), Answer::Ok).await;
    let transcript = raw_session(
        server.port,
        b"EHLO raw.test\r\n\
          MAIL FROM:<a@example.org> BODY=8BITMIME\r\n\
          RCPT TO:<one@support.example>\r\n\
          RCPT TO:<x@elsewhere.example>\r\n\
          RCPT TO:<TWO@SUPPORT.EXAMPLE>\r\n\
          DATA\r\n\
          Subject: pipelined\r\n\
          \r\n\
          ..stuffed\r\n\
          a bare LF line\n\
          \xc3\xa9t\xc3\xa9 in 8 bits\r\n\
          .\r\n\
          MAIL FROM:<>\r\n\
          RCPT TO:<three@support.example>\r\n\
          DATA\r\n\
          second\r\n\
          .\r\n\
          QUIT\r\n",
    )
    .await;
    assert_eq!(
        reply_codes(&transcript),
        [
            220, 250, 250, 250, 550, 250, 354, 250, 250, 250, 354, 250, 221
        ],
        "{transcript}"
    );
    assert!(transcript.contains("250-PIPELINING\r\n"));
    assert!(transcript.contains("250-8BITMIME\r\n"));
    assert!(transcript.contains("250-ENHANCEDSTATUSCODES\r\n"));
    assert!(transcript.contains("550 5.7.1 relay denied\r\n"));

    let calls = server.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].0.rcpt_to,
        ["one@support.example", "TWO@SUPPORT.EXAMPLE"]
    );
    assert_eq!(
        calls[0].1,
        b"Subject: pipelined\r\n\r\n.stuffed\r\na bare LF line\r\n\xc3\xa9t\xc3\xa9 in 8 bits\r\n"
    );
    assert_eq!(calls[1].0.mail_from, "");
    assert_eq!(calls[1].0.rcpt_to, ["three@support.example"]);
    assert_eq!(calls[1].1, b"second\r\n");
}

#[tokio::test]
async fn an_end_marker_with_bare_line_feeds_does_not_end_the_mail() {
    // "SMTP smuggling": a second mail hidden behind LF . LF must stay text of the first.
    let server = start(config(), Answer::Ok).await;
    let transcript = raw_session(
        server.port,
        b"EHLO raw.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<t@support.example>\r\nDATA\r\n\
          first\n.\nMAIL FROM:<admin@example.org>\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(
        reply_codes(&transcript),
        [220, 250, 250, 250, 354, 250, 221]
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].1,
        b"first\r\n\r\nMAIL FROM:<admin@example.org>\r\n"
    );
}

#[tokio::test]
async fn syntax_sequence_and_unknown_commands_get_their_codes() {
    let server = start(config(), Answer::Ok).await;
    let long = format!("NOOP {}\r\n", "x".repeat(1000));
    let input = [
        b"DATA\r\nHELO\r\nHELO raw.test\r\nRCPT TO:<t@support.example>\r\n".as_slice(),
        b"MAIL FROM:<not an address>\r\nMAIL FROM:<a@example.org> SIZE=abc\r\n",
        b"FROBNICATE\r\nSTARTTLS\r\nVRFY postmaster\r\nHELP\r\nNOOP\r\nRSET\r\n",
        long.as_bytes(),
        b"NOOP\nQUIT\r\n",
    ]
    .concat();
    let transcript = raw_session(server.port, &input).await;
    assert_eq!(
        reply_codes(&transcript),
        [
            220, 503, 501, 250, 503, 501, 555, 500, 502, 252, 214, 250, 250, 500, 250, 221
        ],
        "{transcript}"
    );
    // After HELO, no enhanced status codes (RFC 2034).
    assert!(
        transcript.contains("\r\n503 need MAIL before RCPT\r\n"),
        "{transcript}"
    );
}

#[tokio::test]
async fn a_silent_client_does_not_delay_another_clients_mail() {
    let server = start(config(), Answer::Ok).await;
    let mut silent = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut greeting = [0u8; 64];
    let n = silent.read(&mut greeting).await.unwrap();
    assert!(greeting[..n].starts_with(b"220 "));
    // The silent client also leaves a mail half sent.
    silent
        .write_all(b"EHLO slow.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<t@support.example>\r\nDATA\r\nSubject: half")
        .await
        .unwrap();

    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        lettre_client(server.port).send_raw(
            &lettre_envelope(Some("b@example.org"), &["t@support.example"]),
            MAIL,
        ),
    )
    .await
    .expect("the other client is served at once");
    sent.unwrap();
    assert_eq!(server.calls().len(), 1);
    assert_eq!(server.calls()[0].0.mail_from, "b@example.org");
}

#[tokio::test]
async fn a_client_idle_past_the_timeout_gets_421_and_is_closed() {
    let server = start(
        ListenerConfig {
            idle_timeout: Duration::from_millis(300),
            ..config()
        },
        Answer::Ok,
    )
    .await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let transcript = read_to_close(&mut stream).await;
    assert_eq!(reply_codes(&transcript), [220, 421], "{transcript}");

    // Idle in the middle of a mail: 421 too, and nothing handed over.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream
        .write_all(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<t@support.example>\r\nDATA\r\nSubject: half\r\n")
        .await
        .unwrap();
    let transcript = read_to_close(&mut stream).await;
    assert_eq!(
        reply_codes(&transcript),
        [220, 250, 250, 250, 354, 421],
        "{transcript}"
    );
    assert!(
        transcript
            .ends_with("421 4.4.2 mx.support.test idle for too long, closing the connection\r\n")
    );
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn connections_past_the_cap_get_421_at_once() {
    let server = start(
        ListenerConfig {
            max_connections: 1,
            ..config()
        },
        Answer::Ok,
    )
    .await;
    let mut first = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut greeting = [0u8; 64];
    let n = first.read(&mut greeting).await.unwrap();
    assert!(greeting[..n].starts_with(b"220 "));

    let mut second = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let transcript = read_to_close(&mut second).await;
    assert_eq!(reply_codes(&transcript), [421], "{transcript}");

    // Once the first leaves, its slot is free again.
    first.write_all(b"QUIT\r\n").await.unwrap();
    read_to_close(&mut first).await;
    let transcript = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let transcript = raw_session(server.port, b"QUIT\r\n").await;
            if !transcript.starts_with("421") {
                return transcript;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(reply_codes(&transcript), [220, 221]);
}

#[tokio::test]
async fn shutdown_answers_waiting_clients_421_and_serve_returns() {
    let server = start(config(), Answer::Ok).await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream.write_all(b"EHLO c\r\n").await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("250 HELP\r\n") {
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    server.stop.send(true).unwrap();
    let rest = read_to_close(&mut stream).await;
    assert_eq!(
        rest,
        "421 4.3.2 mx.support.test shutting down, try again later\r\n"
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_lets_a_mail_being_handed_over_finish_with_250() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&release);
    let handler = move |_: Envelope, _: Vec<u8>| {
        let (entered_tx, gate) = (entered_tx.clone(), Arc::clone(&gate));
        async move {
            entered_tx.send(()).unwrap();
            gate.notified().await;
            Ok(())
        }
    };
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(serve(listener, config(), handler, shutdown));
    let send = tokio::spawn(async move {
        lettre_client(port)
            .send_raw(
                &lettre_envelope(Some("a@example.org"), &["t@support.example"]),
                MAIL,
            )
            .await
    });
    let mut entered = entered;
    entered.recv().await.unwrap();
    stop.send(true).unwrap();
    // The listener waits for the handler instead of cutting the client off.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished());
    release.notify_one();
    let response = send.await.unwrap().unwrap();
    assert_eq!(response.code().to_string(), "250");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_hostname_that_could_forge_replies_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let config = ListenerConfig::new("support.example", "mx\r\n250 forged");
    let error = serve(listener, config, |_, _| async { Ok(()) }, shutdown)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

/// Python's `smtplib`, a client written independently of lettre: lower-case commands,
/// `size=` on MAIL, its own dot-stuffing, and bare LFs in a bytes message passed through.
#[tokio::test]
async fn a_mail_sent_with_python_smtplib_arrives_too() {
    let python = tokio::process::Command::new("python3")
        .arg("--version")
        .output()
        .await;
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("python3 not found: skipping the smtplib client");
        return;
    }
    let server = start(config(), Answer::Ok).await;
    let script = r#"
import smtplib, sys
msg = b"Subject: py\r\n\r\n.starts with a dot\nbare LF line\r\nend"
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="py.test", timeout=10) as s:
    s.sendmail("", ["Tok@SUPPORT.EXAMPLE"], msg)
"#;
    let output = tokio::process::Command::new("python3")
        .args(["-c", script, &server.port.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    let (envelope, bytes) = &calls[0];
    assert_eq!(envelope.helo, "py.test");
    assert_eq!(envelope.mail_from, "");
    assert_eq!(envelope.rcpt_to, ["Tok@SUPPORT.EXAMPLE"]);
    assert_eq!(
        bytes,
        b"Subject: py\r\n\r\n.starts with a dot\r\nbare LF line\r\nend\r\n"
    );
}

#[tokio::test]
async fn reading_a_piece_stops_at_each_line_feed_and_at_the_limit() {
    let mut input: &[u8] = b"EHLO a\r\nNOOP\nabcdefghij\r\ntail";
    let mut out = Vec::new();
    assert_eq!(
        read_piece(&mut input, &mut out, 8).await.unwrap(),
        Piece::Line
    );
    assert_eq!(out, b"EHLO a\r\n");
    assert_eq!(
        read_piece(&mut input, &mut out, 8).await.unwrap(),
        Piece::Line
    );
    assert_eq!(out, b"NOOP\n");
    assert_eq!(
        read_piece(&mut input, &mut out, 8).await.unwrap(),
        Piece::Partial
    );
    assert_eq!(out, b"abcdefgh");
    assert_eq!(
        read_piece(&mut input, &mut out, 8).await.unwrap(),
        Piece::Line
    );
    assert_eq!(out, b"ij\r\n");
    // A client closing in the middle of a line: that line is never taken.
    assert_eq!(
        read_piece(&mut input, &mut out, 8).await.unwrap(),
        Piece::Eof
    );
}

#[tokio::test]
async fn an_overlong_command_is_skipped_to_its_line_end() {
    let long = [vec![b'x'; 2500], b"\r\nQUIT\r\n".to_vec()].concat();
    let mut input: &[u8] = &long;
    let mut line = Vec::new();
    assert_eq!(
        read_command(&mut input, &mut line).await.unwrap(),
        Piece::Partial
    );
    assert_eq!(
        read_command(&mut input, &mut line).await.unwrap(),
        Piece::Line
    );
    assert_eq!(line, b"QUIT\r\n");
}

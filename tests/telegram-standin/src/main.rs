//! `telegram-standin --token T [--port P]`: runs the stand-in on 127.0.0.1 for manual use
//! (e.g. pointing a bot at it with `TELOXIDE_API_URL`). Stops on Ctrl-C.

use std::process::ExitCode;

use telegram_standin::StandIn;

const USAGE: &str = "usage: telegram-standin --token TOKEN [--port PORT]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut token = None;
    let mut port: u16 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--token" => token = args.next(),
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(token) = token else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let standin = match StandIn::serve(&token, listener) {
        Ok(standin) => standin,
        Err(error) => {
            eprintln!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The URL is printed without the token, which must not end up in logs.
    println!(
        "Telegram Bot API stand-in listening at {}",
        standin.api_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    standin.stop();
    ExitCode::SUCCESS
}

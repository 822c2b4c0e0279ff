//! Runs the Discord stand-in as a process, for trying a bot against it by hand:
//! `discord-standin --token TOKEN [--port PORT]`.

use std::process::ExitCode;

use discord_standin::DiscordStandIn;

const USAGE: &str = "usage: discord-standin --token TOKEN [--port PORT]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut token = None;
    let mut port: u16 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--token", Some(value)) => token = Some(value),
            ("--port", Some(value)) => match value.parse() {
                Ok(p) => port = p,
                Err(_) => {
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
    let discord = match DiscordStandIn::serve(&token, listener) {
        Ok(discord) => discord,
        Err(error) => {
            eprintln!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let general = discord.create_text_channel("general");
    // The token is not printed: it must not end up in logs.
    println!(
        "Discord stand-in: REST {}/api/v10, gateway {}, guild {}, channel #general {}",
        discord.base_url(),
        discord.gateway_url(),
        discord.guild_id(),
        general
    );
    let _ = tokio::signal::ctrl_c().await;
    discord.stop();
    ExitCode::SUCCESS
}

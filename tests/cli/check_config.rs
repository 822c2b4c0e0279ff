//! `check-config` against the real parts `scripts/test.sh` starts (Synapse, PostgreSQL, the mail
//! servers) and the Telegram and Discord stand-ins.

use super::*;

/// `switchboard check-config --config CONFIG --timeout 3`: whether it exited 0, and what it
/// printed (standard output, then standard error). Run off the async runtime, which serves
/// the stand-ins it talks to meanwhile.
async fn check_config(config: &Path) -> anyhow::Result<(bool, String)> {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .args(["check-config", "--timeout", "3", "--config"])
            .arg(&config)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::Ok((out.status.success(), text))
    })
    .await?
}

/// The line `check-config` printed for `what` at `level` (`ok`, `warn`, `FAIL`), if any.
fn check_line<'a>(output: &'a str, level: &str, what: &str) -> Option<&'a str> {
    output.lines().find(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(level) && words.next() == Some(what)
    })
}

/// A configuration for the main Synapse with `registration`, listening where slot 0's
/// registration sends events. check-config binds nothing and asks the homeserver for nothing
/// but `/versions` and `whoami`, so it may read the slot's registration while the slot is
/// another test binary's (test binaries run one at a time anyway).
fn check_config_toml(
    env: &common::TestEnv,
    slot: &common::Slot,
    registration: &Path,
    database: &str,
    extra: &str,
) -> String {
    format!(
        "[homeserver]\nurl = {hs:?}\nserver_name = {server:?}\n\n\
         [appservice]\nregistration = {reg:?}\nlisten = \"{listen}\"\n\n\
         [database]\nurl = {database:?}\n\n{extra}",
        hs = env.hs_url,
        server = env.server_name,
        reg = registration.display().to_string(),
        listen = slot.listen,
    )
}

const CHECK_TG_TOKEN: &str = "7001:check-config-telegram-secret";
const CHECK_DC_TOKEN: &str = "MTA.check-config.discord-secret";

/// A configuration that works end to end: every check is listed as ok, the command exits 0,
/// and nothing it printed holds a token (the registration's, Telegram's, Discord's). The
/// database is read, never created or migrated: a new SQLite file is reported as missing
/// (and stays so); once `Store::connect` migrated it, every migration is applied; the
/// PostgreSQL server is read as it is.
#[tokio::test]
async fn check_config_lists_every_check_as_ok_for_a_working_configuration() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let tg = telegram_standin::StandIn::start(CHECK_TG_TOKEN).await?;
    let dc = discord_standin::DiscordStandIn::start(CHECK_DC_TOKEN).await?;
    let dir = tempfile::tempdir()?;
    let db_file = dir.path().join("switchboard.db");
    let db = format!("sqlite://{}", db_file.display());
    let platforms = format!(
        "[telegram]\ntoken = {CHECK_TG_TOKEN:?}\napi_url = {tg_api:?}\n\n\
         [discord]\ntoken = {CHECK_DC_TOKEN:?}\napplication_id = \"{app}\"\napi_url = {dc_api:?}\n",
        tg_api = tg.api_url(),
        app = dc.application_id(),
        dc_api = dc.base_url(),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        check_config_toml(&env, &slot, &slot.registration, &db, &platforms),
    )?;

    let (passed, out) = check_config(&config).await?;
    assert!(passed, "check-config failed:\n{out}");
    let bot = env.user_id(&format!("sbt{}bot", 0));
    let homeserver = check_line(&out, "ok", "homeserver").context(out.clone())?;
    assert!(
        homeserver.contains(&env.hs_url)
            && homeserver.contains("(Synapse ")
            && homeserver.contains("as_token accepted")
            && homeserver.contains(&bot),
        "{out}"
    );
    for what in ["config", "registration", "matrix"] {
        assert!(
            check_line(&out, "ok", what).is_some(),
            "no ok {what}:\n{out}"
        );
    }
    let database = check_line(&out, "ok", "database").context(out.clone())?;
    assert!(database.contains("does not exist yet"), "{out}");
    assert!(!db_file.exists(), "check-config created the database");
    let telegram = check_line(&out, "ok", "telegram").context(out.clone())?;
    assert!(telegram.contains("getMe: @"), "{out}");
    let discord = check_line(&out, "ok", "discord").context(out.clone())?;
    assert!(discord.contains("GET /users/@me"), "{out}");
    assert!(
        !out.contains("FAIL") && !out.contains("warn "),
        "a failure or warning in a working configuration:\n{out}"
    );
    for secret in [
        slot.as_token.as_str(),
        slot.hs_token.as_str(),
        CHECK_TG_TOKEN,
        CHECK_DC_TOKEN,
    ] {
        assert!(!out.contains(secret), "a secret was printed:\n{out}");
    }

    // Migrated by what `run` uses: every migration this build has is applied.
    let migrations =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge/migrations/sqlite"))?
            .count();
    switchboard_bridge::Store::connect(&db).await?.close().await;
    let (passed, out) = check_config(&config).await?;
    assert!(passed, "{out}");
    let database = check_line(&out, "ok", "database").context(out.clone())?;
    assert!(
        database.contains(&format!("{migrations} migrations applied, none pending")),
        "{out}"
    );

    // PostgreSQL, as the test server is.
    let pg = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")?;
    std::fs::write(
        &config,
        check_config_toml(&env, &slot, &slot.registration, &pg, ""),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(passed, "{out}");
    assert!(
        check_line(&out, "ok", "database").is_some_and(|l| l.contains("postgres://")),
        "{out}"
    );
    Ok(())
}

/// A registration the homeserver does not list (its as_token unknown to it) is reported as
/// such, with how to fix it, and the command exits non-zero, printing neither token.
#[tokio::test]
async fn check_config_reports_a_registration_the_homeserver_does_not_know() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let dir = tempfile::tempdir()?;
    let unknown_token = "check-config-unknown-as-token-0123456789";
    let registration = dir.path().join("registration.yaml");
    std::fs::write(
        &registration,
        std::fs::read_to_string(&slot.registration)?.replace(&slot.as_token, unknown_token),
    )?;
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        check_config_toml(&env, &slot, &registration, &db, ""),
    )?;

    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "an unknown as_token passed:\n{out}");
    let homeserver = check_line(&out, "FAIL", "homeserver").context(out.clone())?;
    assert!(
        homeserver.contains("M_UNKNOWN_TOKEN")
            && homeserver.contains("app_service_config_files")
            && homeserver.contains(&registration.display().to_string()),
        "{out}"
    );
    // The other checks still ran.
    assert!(check_line(&out, "ok", "database").is_some(), "{out}");
    assert!(out.contains("1 check failed"), "{out}");
    for secret in [unknown_token, slot.hs_token.as_str()] {
        assert!(!out.contains(secret), "a token was printed:\n{out}");
    }
    Ok(())
}

/// Wrong Telegram and Discord bot tokens, checked against the stand-ins: each platform's
/// line says FAIL, why, and where the right token comes from; neither token is printed.
#[tokio::test]
async fn check_config_reports_wrong_platform_tokens_without_printing_them() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let tg = telegram_standin::StandIn::start(CHECK_TG_TOKEN).await?;
    let dc = discord_standin::DiscordStandIn::start(CHECK_DC_TOKEN).await?;
    let wrong_tg = "7001:a-wrong-telegram-token";
    let wrong_dc = "MTA.a-wrong.discord-token";
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    // The Discord token from a file, as container secrets are mounted.
    let dc_token_file = dir.path().join("discord-token");
    std::fs::write(&dc_token_file, format!("{wrong_dc}\n"))?;
    std::fs::write(
        &config,
        check_config_toml(
            &env,
            &slot,
            &slot.registration,
            &db,
            &format!(
                "[telegram]\ntoken = {wrong_tg:?}\napi_url = {tg_api:?}\n\n\
                 [discord]\ntoken_file = {file:?}\napplication_id = \"{app}\"\napi_url = {dc_api:?}\n",
                tg_api = tg.api_url(),
                file = dc_token_file.display().to_string(),
                app = dc.application_id(),
                dc_api = dc.base_url(),
            ),
        ),
    )?;

    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "wrong tokens passed:\n{out}");
    let telegram = check_line(&out, "FAIL", "telegram").context(out.clone())?;
    assert!(
        telegram.contains("getMe")
            && telegram.contains("Unauthorized")
            && telegram.contains("@BotFather"),
        "{out}"
    );
    let discord = check_line(&out, "FAIL", "discord").context(out.clone())?;
    assert!(
        discord.contains("401") && discord.contains("Reset Token"),
        "{out}"
    );
    assert!(check_line(&out, "ok", "homeserver").is_some(), "{out}");
    assert!(out.contains("2 checks failed"), "{out}");
    for secret in [wrong_tg, wrong_dc, slot.as_token.as_str()] {
        assert!(!out.contains(secret), "a token was printed:\n{out}");
    }
    Ok(())
}

/// A database that cannot be reached fails clearly and in bounded time, never printing a
/// PostgreSQL password: a SQLite file in a directory that does not exist, a PostgreSQL port
/// nothing listens on, and one that takes the connection but never answers (cut off at
/// `--timeout`).
#[tokio::test]
async fn check_config_fails_clearly_on_an_unreachable_database() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // Bound and never accepted: the kernel completes the connection, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let password = "db-secret-password";
    let cases = [
        (
            format!(
                "sqlite://{}",
                dir.path().join("no-such-dir/switchboard.db").display()
            ),
            "no-such-dir",
        ),
        (
            format!("postgres://switchboard:{password}@{closed}/switchboard"),
            "Connection refused",
        ),
        (
            format!(
                "postgres://switchboard:{password}@{}/switchboard",
                silent.local_addr()?
            ),
            "no answer within 3 s",
        ),
    ];
    for (url, says) in cases {
        std::fs::write(
            &config,
            check_config_toml(&env, &slot, &slot.registration, &url, ""),
        )?;
        let started = std::time::Instant::now();
        let (passed, out) = check_config(&config).await?;
        assert!(!passed, "{url}: passed:\n{out}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{url}: took {:?}",
            started.elapsed()
        );
        let database = check_line(&out, "FAIL", "database").context(out.clone())?;
        assert!(
            database.contains(says) && database.contains("database.url"),
            "{url}: {out}"
        );
        assert!(!out.contains(password), "the password was printed:\n{out}");
        assert!(check_line(&out, "ok", "homeserver").is_some(), "{out}");
    }
    drop(silent);
    Ok(())
}

/// The `[email]` section (and `[visitors] public_url`, which it needs) for the test mail
/// server `scripts/test.sh` starts, logging in to SMTP and IMAP with `password`.
fn check_email_section(password: &str) -> anyhow::Result<String> {
    let var =
        |name: &str| std::env::var(name).with_context(|| format!("{name}: run scripts/test.sh"));
    Ok(format!(
        "[visitors]\npublic_url = \"http://127.0.0.1:1\"\n\n\
         [email]\ndomain = \"example.test\"\nfrom_address = \"support@example.test\"\n\n\
         [email.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\n\
         username = \"support@example.test\"\npassword = {password:?}\n\n\
         [email.imap]\nhost = \"127.0.0.1\"\nport = {imap}\nsecurity = \"none\"\n\
         username = \"check-config@example.test\"\npassword = {password:?}\n\n\
         [email.authentication]\nnameservers = [{dns:?}]\n",
        smtp = var("SWITCHBOARD_TEST_SMTP_PORT")?,
        imap = var("SWITCHBOARD_TEST_IMAP_PORT")?,
        dns = var("SWITCHBOARD_TEST_DNS")?,
    ))
}

/// Email against the real mail server (Dovecot behind an SMTP front): with the right
/// password SMTP takes the AUTH and IMAP the login, nothing sent; with a wrong one both
/// refusals are named, the command fails, and the password is printed nowhere.
#[tokio::test]
async fn check_config_logs_in_to_smtp_and_imap_and_names_a_refused_login() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    let password = std::env::var("SWITCHBOARD_TEST_MAIL_PASSWORD")?;
    std::fs::write(
        &config,
        check_config_toml(
            &env,
            &slot,
            &slot.registration,
            &db,
            &check_email_section(&password)?,
        ),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(passed, "{out}");
    let email = check_line(&out, "ok", "email").context(out.clone())?;
    assert!(
        email.contains("AUTH accepted")
            && email.contains("logged in as \"check-config@example.test\""),
        "{out}"
    );
    assert!(!out.contains(&password), "the password was printed:\n{out}");

    let wrong = "a-wrong-mail-password";
    std::fs::write(
        &config,
        check_config_toml(
            &env,
            &slot,
            &slot.registration,
            &db,
            &check_email_section(wrong)?,
        ),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "a wrong mail password passed:\n{out}");
    let email = check_line(&out, "FAIL", "email").context(out.clone())?;
    assert!(
        email.contains("SMTP") && email.contains("535") && email.contains("refused the login"),
        "{out}"
    );
    assert!(!out.contains(wrong), "the password was printed:\n{out}");
    Ok(())
}

/// Without a configuration nothing else is tried, and the line says which file; with a
/// registration file that is not there, the registration fails naming the file and how to
/// make one, the homeserver (whose token it holds) is skipped, and the rest is still checked.
#[tokio::test]
async fn check_config_names_a_missing_configuration_or_registration() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "{out}");
    let line = check_line(&out, "FAIL", "config").context(out.clone())?;
    assert!(line.contains("config.toml"), "{out}");
    assert!(check_line(&out, "skip", "everything").is_some(), "{out}");

    let registration = dir.path().join("no-such-registration.yaml");
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"example.org\"\n\n\
             [appservice]\nregistration = {reg:?}\nlisten = \"127.0.0.1:29330\"\n\n\
             [database]\nurl = {db:?}\n",
            reg = registration.display().to_string(),
        ),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "{out}");
    let line = check_line(&out, "FAIL", "registration").context(out.clone())?;
    assert!(
        line.contains("no-such-registration.yaml") && line.contains("generate-registration"),
        "{out}"
    );
    assert!(check_line(&out, "skip", "homeserver").is_some(), "{out}");
    assert!(check_line(&out, "ok", "database").is_some(), "{out}");
    assert!(check_line(&out, "ok", "matrix").is_some(), "{out}");
    assert!(out.contains("1 check failed"), "{out}");
    Ok(())
}

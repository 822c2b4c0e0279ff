use super::*;
use switchboard_bridge::config::VisitorMode;

const MINIMAL: &str = "[homeserver]\nurl = \"http://127.0.0.1:8008\"\nserver_name = \"example.org\"\n\n\
         [appservice]\nregistration = \"registration.yaml\"\nlisten = \"127.0.0.1:29330\"\n";

/// Loads `MINIMAL` plus `extra`, inside a `figment::Jail`: the loader reads the
/// environment, and a test that sets variables does so in a jail too, so no test sees
/// another's.
// `Jail::expect_with` fixes the closure's error type (figment's, which is large).
#[allow(clippy::result_large_err)]
fn load(extra: &str) -> anyhow::Result<Config> {
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        let path = jail.directory().join("config.toml");
        std::fs::write(&path, format!("{MINIMAL}\n{extra}")).expect("writing the config");
        loaded = Some(Config::load(&path));
        Ok(())
    });
    loaded.expect("the jail ran")
}

#[test]
fn a_platform_is_enabled_by_its_section_which_its_module_reads() {
    assert_eq!(load("").unwrap().enabled_platforms().unwrap(), ["matrix"]);
    let config = load("[telegram]\ntoken = \"1:abc\"\npoll_timeout_secs = 5\n").unwrap();
    assert_eq!(config.enabled_platforms().unwrap(), ["matrix", "telegram"]);
    let config = load("[discord]\ntoken = \"t\"\napplication_id = \"42\"\n").unwrap();
    assert_eq!(config.enabled_platforms().unwrap(), ["matrix", "discord"]);
    let err = load("[discord]\ntoken = \"t\"\n").unwrap_err();
    assert!(format!("{err:#}").contains("application_id"), "{err:#}");
    let err = load("[telegram]\napi_url = \"http://x\"\n").unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("[telegram]") && text.contains("token"),
        "{text}"
    );
    // A Telegram contact needs Telegram enabled; the error lists what is.
    let err = load("[[responders]]\nid = \"ann\"\ndisplay_name = \"Ann\"\ncontacts = [{ platform = \"telegram\", address = \"1\" }]\n")
            .unwrap_err();
    assert!(format!("{err:#}").contains("known: matrix"), "{err:#}");
}

/// Every secret can come from a file named by `KEY_file` (or `SWITCHBOARD_…_FILE`), as
/// container secrets are mounted: read without its trailing newline, refused when the
/// plain key is given too, and a missing file named in the error without any content.
#[test]
#[allow(clippy::result_large_err)] // see `load`
fn secrets_come_from_files_named_in_the_file_or_the_environment() {
    figment::Jail::expect_with(|jail| {
        let dir = jail.directory().to_owned();
        std::fs::write(dir.join("tg"), "1:from-a-file\n").unwrap();
        std::fs::write(dir.join("admin"), "admin-from-a-file\r\n").unwrap();
        std::fs::write(dir.join("db"), "sqlite://from-a-file.db\n").unwrap();
        std::fs::write(dir.join("smtp"), "mail-password\n").unwrap();
        let write = |extra: &str| {
            std::fs::write(dir.join("config.toml"), format!("{MINIMAL}\n{extra}")).unwrap();
            Config::load(&dir.join("config.toml"))
        };
        let config = write(&format!(
            "[database]\nurl_file = \"{db}\"\n[telegram]\ntoken_file = \"{tg}\"\n",
            db = dir.join("db").display(),
            tg = dir.join("tg").display(),
        ))
        .unwrap();
        assert_eq!(config.database.url, "sqlite://from-a-file.db");
        assert_eq!(
            config.platform_section("telegram").unwrap()["token"],
            "1:from-a-file"
        );
        assert!(
            config
                .platform_section("telegram")
                .unwrap()
                .get("token_file")
                .is_none()
        );
        // From the environment.
        jail.set_env(
            "SWITCHBOARD_ADMIN__TOKEN_FILE",
            dir.join("admin").display().to_string(),
        );
        let config = write("").unwrap();
        assert_eq!(config.admin.unwrap().token, "admin-from-a-file");
        // Given twice.
        let err = write("[admin]\ntoken = \"plain\"\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("admin.token and admin.token_file are both set"),
            "{err:#}"
        );
        // A file that is not there: named, and nothing of any secret shown.
        jail.set_env("SWITCHBOARD_ADMIN__TOKEN_FILE", "/nonexistent/admin-token");
        let err = format!(
            "{:#}",
            write(&format!(
                "[telegram]\ntoken_file = \"{}\"\n",
                dir.join("tg").display()
            ))
            .unwrap_err()
        );
        assert!(
            err.contains("admin.token_file: cannot read /nonexistent/admin-token"),
            "{err}"
        );
        assert!(!err.contains("from-a-file"), "{err}");
        // What the configuration prints (a log line, a panic) holds none of them.
        std::fs::write(dir.join("db"), "postgres://sb:db-password@db/sb\n").unwrap();
        jail.set_env(
            "SWITCHBOARD_ADMIN__TOKEN_FILE",
            dir.join("admin").display().to_string(),
        );
        let config = write(&format!(
            "[database]\nurl_file = \"{db}\"\n[telegram]\ntoken_file = \"{tg}\"\n",
            db = dir.join("db").display(),
            tg = dir.join("tg").display(),
        ))
        .unwrap();
        assert_eq!(config.database.url, "postgres://sb:db-password@db/sb");
        let printed = format!("{config:?}");
        for secret in ["db-password", "from-a-file"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("postgres"), "{printed}");
        // Nested tables too (a mail password), and other `*_file` keys are paths their
        // module reads itself (a DKIM key), left as they are.
        let mut value: Value = Figment::from(Toml::string(&format!(
            "[email.smtp]\npassword_file = \"{}\"\n[email.dkim]\nkey_file = \"/etc/dkim.pem\"\n",
            dir.join("smtp").display()
        )))
        .extract()
        .unwrap();
        secrets_from_files(&mut value, "").unwrap();
        let email = value.find_ref("email").unwrap();
        assert_eq!(
            email.find_ref("smtp.password").and_then(Value::as_str),
            Some("mail-password")
        );
        assert_eq!(
            email.find_ref("dkim.key_file").and_then(Value::as_str),
            Some("/etc/dkim.pem")
        );
        assert!(email.find_ref("dkim.key").is_none());
        Ok(())
    });
}

/// What `run` refused only once it had connected to the database and the homeserver is
/// refused by the loader, so `check-config` names it too: a server name that is not
/// one, a public homeserver URL without an origin, an empty admin token.
#[test]
#[allow(clippy::result_large_err)] // see `load`
fn a_bad_server_name_public_url_or_empty_admin_token_is_refused_on_loading() {
    figment::Jail::expect_with(|jail| {
        let path = jail.directory().join("config.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        jail.set_env("SWITCHBOARD_HOMESERVER__SERVER_NAME", "not a server name");
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("homeserver.server_name"), "{err}");
        jail.set_env("SWITCHBOARD_HOMESERVER__SERVER_NAME", "example.org");
        jail.set_env("SWITCHBOARD_HOMESERVER__PUBLIC_URL", "chat.example.org");
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("homeserver.public_url"), "{err}");
        jail.set_env(
            "SWITCHBOARD_HOMESERVER__PUBLIC_URL",
            "https://matrix.example.org",
        );
        assert!(Config::load(&path).is_ok());
        jail.set_env("SWITCHBOARD_ADMIN__TOKEN", " ");
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("admin.token is empty"), "{err}");
        Ok(())
    });
}

/// `[retention]`: absent keeps everything; days must be a positive whole number, checked
/// at start-up with the key named; the admin token is a secret like the others (from a
/// file, never printed); an unknown key is refused rather than ignored.
#[test]
#[allow(clippy::result_large_err)] // see `load`
fn retention_is_read_checked_and_its_token_kept_secret() {
    let config = load("").unwrap();
    assert_eq!(config.retention.transcript_days, None);
    assert!(config.retention.homeserver_admin_token.is_none());
    let config = load(
        "[retention]
transcript_days = 30
",
    )
    .unwrap();
    assert_eq!(config.retention.transcript_days, Some(30));
    for (bad, says) in [
        (
            "transcript_days = 0",
            "retention.transcript_days must be at least 1",
        ),
        ("transcript_days = -3", "transcript_days"),
        ("transcript_days = 1.5", "transcript_days"),
        ("transcript_day = 30", "transcript_day"),
    ] {
        let err = format!("{:#}", load(&format!("[retention]\n{bad}\n")).unwrap_err());
        assert!(err.contains(says), "{bad}: {err}");
    }
    figment::Jail::expect_with(|jail| {
        let dir = jail.directory().to_owned();
        std::fs::write(dir.join("hs"), "syt_admin_from_a_file\n").unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "{MINIMAL}\n[retention]\nhomeserver_admin_token_file = \"{}\"\n",
                dir.join("hs").display()
            ),
        )
        .unwrap();
        let config = Config::load(&dir.join("config.toml")).unwrap();
        assert_eq!(
            config.retention.homeserver_admin_token.as_deref(),
            Some("syt_admin_from_a_file")
        );
        assert!(!format!("{config:?}").contains("syt_admin"), "{config:?}");
        Ok(())
    });
}

/// What `check-config` cuts out of its lines: every token, password and secret in any
/// section, however deep, the admin token, and a database URL's password with the URL.
#[test]
fn every_secret_of_a_configuration_is_listed() {
    let config = load(
        "[database]\nurl = \"postgres://sb:db-pw@db/sb\"\n\
             [admin]\ntoken = \"admin-tok\"\n\
             [telegram]\ntoken = \"1:tg-tok\"\nwebhook_secret = \"tg-webhook\"\n\
             webhook_url = \"https://sb.example.org/telegram/webhook\"\n\
             [elsewhere]\nlist = [{ password = \"in-a-list\" }]\n\
             nested = { deeper = { api_token = \"deep-tok\" }, token_count = 3 }\n",
    )
    .unwrap();
    let mut secrets = config.secrets();
    secrets.sort();
    assert_eq!(
        secrets,
        [
            "1:tg-tok",
            "admin-tok",
            "db-pw",
            "deep-tok",
            "in-a-list",
            "postgres://sb:db-pw@db/sb",
            "tg-webhook",
        ]
    );
    assert!(is_secret_key("webhook_secret") && !is_secret_key("tokens"));
    let config = load("[retention]\nhomeserver_admin_token = \"syt-hs-admin\"\n").unwrap();
    assert!(config.secrets().contains(&"syt-hs-admin".to_owned()));
    assert!(
        load("").unwrap().secrets().is_empty(),
        "SQLite has no password"
    );
}

#[test]
fn guest_mode_and_same_origin_are_the_defaults() {
    let config = load("").unwrap();
    assert_eq!(config.visitors.mode, VisitorMode::Guest);
    assert_eq!(
        config.allowed_origins().unwrap(),
        AllowedOrigins::SameOrigin
    );
}

#[test]
fn visitor_accounts_mode_and_its_limits_are_read() {
    let config =
        load("[visitors]\nmode = \"accounts\"\naccounts_per_minute = 2\naccounts_per_hour = 0\n")
            .unwrap();
    assert_eq!(config.visitors.mode, VisitorMode::Accounts);
    assert_eq!(config.visitors.accounts_per_minute, 2);
    assert_eq!(config.visitors.accounts_per_hour, 0);
    assert_eq!(
        config.visitors.conversations_per_minute, 6,
        "others keep defaults"
    );

    let err = load("[visitors]\nmode = \"anonymous\"\n").unwrap_err();
    assert!(format!("{err:#}").contains("anonymous"), "{err:#}");
}

#[test]
fn proxied_mode_its_session_lifetime_and_public_url_are_read() {
    let config = load("[visitors]\nmode = \"proxied\"\n").unwrap();
    assert_eq!(config.visitors.mode, VisitorMode::Proxied);
    assert_eq!(config.visitors.session_ttl_hours, 24, "the default");
    assert_eq!(config.visitors.public_url, None);
    let config = load(
            "[visitors]\nmode = \"proxied\"\nsession_ttl_hours = 2\npublic_url = \"https://chat.example.org\"\n",
        )
        .unwrap();
    assert_eq!(config.visitors.session_ttl_hours, 2);
    assert_eq!(
        config.visitors.public_url.as_deref(),
        Some("https://chat.example.org")
    );
    let err = load("[visitors]\npublic_url = \"chat.example.org\"\n").unwrap_err();
    assert!(
        format!("{err:#}").contains("visitors.public_url"),
        "{err:#}"
    );
}

#[test]
fn metrics_and_the_admin_api_get_addresses_of_their_own() {
    let err = format!("{:#}", load("[metrics]\n").unwrap_err());
    assert!(err.contains("never served on the public listener"), "{err}");
    let config =
        load("[admin]\ntoken = \"t\"\nlisten = \"127.0.0.1:29331\"\n\n[metrics]\n").unwrap();
    assert_eq!(
        config.admin.unwrap().listen,
        Some("127.0.0.1:29331".parse().unwrap())
    );
    assert!(config.metrics.unwrap().listen.is_none());
    let config = load("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
    assert_eq!(
        config.metrics.unwrap().listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    let err = format!(
        "{:#}",
        load("[admin]\ntoken = \"t\"\nlisten = \"127.0.0.1:29330\"\n").unwrap_err()
    );
    assert!(err.contains("an address of its own"), "{err}");
    let err = format!(
        "{:#}",
        load("[metrics]\nlisen = \"127.0.0.1:9464\"\n").unwrap_err()
    );
    assert!(err.contains("lisen"), "a misspelt key is named: {err}");
}

#[test]
fn allowed_origins_are_read_and_checked() {
    let config = load(
        "[web]\nallowed_origins = [\"https://shop.example.org\", \"http://127.0.0.1:8080\"]\n",
    )
    .unwrap();
    assert_eq!(
        config.allowed_origins().unwrap(),
        AllowedOrigins::List(vec![
            "https://shop.example.org".parse().unwrap(),
            "http://127.0.0.1:8080".parse().unwrap(),
        ])
    );
    let any = load("[web]\nallowed_origins = [\"*\"]\n").unwrap();
    assert_eq!(any.allowed_origins().unwrap(), AllowedOrigins::Any);

    for (bad, says) in [
        ("\"https://shop.example.org/\"", "https://shop.example.org"),
        ("\"https://shop.example.org/path\"", "no path"),
        (
            "\"https://shop.example.org:443\"",
            "https://shop.example.org",
        ),
        ("\"shop.example.org\"", "not an origin"),
        ("\"ftp://shop.example.org\"", "http and https"),
        ("\"*\", \"https://shop.example.org\"", "cannot be combined"),
    ] {
        let err = load(&format!("[web]\nallowed_origins = [{bad}]\n")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("web.allowed_origins") && text.contains(says),
            "{bad}: {text}"
        );
    }
}

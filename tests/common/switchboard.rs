//! A Switchboard process under test, and fresh PostgreSQL databases for one.

use super::*;

/// A Switchboard process under test.
pub struct Switchboard {
    child: Option<Child>,
    pub config: PathBuf,
    pub db_url: String,
    pub base: String,
    pub log: PathBuf,
    bin: PathBuf,
    /// `RUST_LOG` for the process.
    log_filter: String,
    _dir: tempfile::TempDir,
}

/// What the tests log: debug for Switchboard's own crates, so a failure's log tells the story.
pub const TEST_LOG_FILTER: &str =
    "info,switchboard_bridge=debug,switchboard_appservice=debug,sqlx=warn";

impl Switchboard {
    /// Writes a config with SQLite in a fresh directory and starts the binary.
    pub async fn start(env: &TestEnv, slot: &Slot, extra_toml: &str) -> anyhow::Result<Self> {
        Self::start_logging(env, slot, extra_toml, TEST_LOG_FILTER).await
    }

    /// Like [`Self::start`], with `RUST_LOG` set to `log_filter` (the benchmark runs at
    /// `info`, as a deployment would, instead of the tests' debug logging).
    pub async fn start_logging(
        env: &TestEnv,
        slot: &Slot,
        extra_toml: &str,
        log_filter: &str,
    ) -> anyhow::Result<Self> {
        Self::start_on(env, slot, extra_toml, log_filter, None).await
    }

    /// Like [`Self::start`], on a fresh database of the PostgreSQL cluster scripts/test.sh
    /// starts instead of SQLite.
    pub async fn start_on_postgres(
        env: &TestEnv,
        slot: &Slot,
        extra_toml: &str,
    ) -> anyhow::Result<Self> {
        let url = fresh_postgres_database("sbe2e").await?;
        Self::start_on(env, slot, extra_toml, TEST_LOG_FILTER, Some(url)).await
    }

    /// One of several instances on the PostgreSQL database `db_url`, listening on `listen`
    /// (the slot's address is the load balancer's, [`LoadBalancer`]), logging at `log_filter`.
    pub async fn start_instance(
        env: &TestEnv,
        slot: &Slot,
        listen: SocketAddr,
        extra_toml: &str,
        db_url: &str,
        log_filter: &str,
    ) -> anyhow::Result<Self> {
        Self::start_at(
            env,
            slot,
            listen,
            extra_toml,
            log_filter,
            Some(db_url.to_owned()),
        )
        .await
    }

    async fn start_on(
        env: &TestEnv,
        slot: &Slot,
        extra_toml: &str,
        log_filter: &str,
        db_url: Option<String>,
    ) -> anyhow::Result<Self> {
        Self::start_at(env, slot, slot.listen, extra_toml, log_filter, db_url).await
    }

    async fn start_at(
        env: &TestEnv,
        slot: &Slot,
        listen: SocketAddr,
        extra_toml: &str,
        log_filter: &str,
        db_url: Option<String>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("switchboard.db");
        let db_url = db_url.unwrap_or_else(|| format!("sqlite://{}", db.display()));
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[homeserver]\nurl = {hs:?}\nserver_name = {sn:?}\n\n\
                 [appservice]\nregistration = {reg:?}\nlisten = \"{listen}\"\n\n\
                 [database]\nurl = {db_url:?}\n\n{extra_toml}\n",
                hs = env.hs_url,
                sn = env.server_name,
                reg = slot.registration.display().to_string(),
            ),
        )?;
        let mut sb = Self {
            child: None,
            config,
            db_url,
            base: format!("http://{listen}"),
            log: dir.path().join("switchboard.log"),
            bin: env.bin.clone(),
            log_filter: log_filter.to_owned(),
            _dir: dir,
        };
        sb.spawn().await?;
        Ok(sb)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", &self.log_filter)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting switchboard")?;
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/health", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!(
                    "switchboard exited with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "switchboard did not become healthy; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no chance to flush or say goodbye, the harshest restart there is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// SIGTERM, as an operator's stop or a rolling restart does: it finishes, gives up what
    /// it holds among instances, and exits. Waits until it has.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again after [`Self::kill`] or [`Self::terminate`].
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "still running");
        self.spawn().await
    }

    /// The process ID of the running Switchboard, if it is running (the benchmark reads its
    /// CPU time and memory from `/proc/<pid>`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `switchboard link-code --platform P --responder R` on this instance's config, as
    /// an operator would: the code it printed, or the command's error output.
    pub fn link_code(
        &self,
        env: &TestEnv,
        platform: &str,
        responder: &str,
    ) -> anyhow::Result<Result<String, String>> {
        let out = std::process::Command::new(&env.bin)
            .args([
                "link-code",
                "--platform",
                platform,
                "--responder",
                responder,
            ])
            .arg("--config")
            .arg(&self.config)
            .output()?;
        Ok(if out.status.success() {
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn store(&self) -> anyhow::Result<switchboard_bridge::Store> {
        Ok(switchboard_bridge::Store::connect(&self.db_url).await?)
    }

    /// The last `n` warnings and errors in the log, one per line: for a test's error message,
    /// so a failure in CI (whose log keeps only the head of a test's output) says what
    /// Switchboard ran into.
    pub fn log_problems(&self, n: usize) -> String {
        let log = self.log_text();
        let problems: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        problems[problems.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Switchboard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- switchboard log ---\n{}", self.log_text());
        }
        // A test that fails by returning an error does not panic: to read its log, name a
        // directory to keep every log in.
        if let Some(dir) = std::env::var_os("SWITCHBOARD_TEST_LOG_DIR") {
            let name = self.log.parent().and_then(|p| p.file_name()).map_or_else(
                || "switchboard".into(),
                |n| n.to_string_lossy().into_owned(),
            );
            let _ = std::fs::copy(&self.log, Path::new(&dir).join(format!("{name}.log")));
        }
    }
}

/// A new, empty database on the PostgreSQL cluster scripts/test.sh starts
/// (`SWITCHBOARD_TEST_POSTGRES_URL`); its URL.
pub async fn fresh_postgres_database(prefix: &str) -> anyhow::Result<String> {
    let admin_url = required_var("SWITCHBOARD_TEST_POSTGRES_URL");
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    let db = format!("{prefix}_{}_{micros}", std::process::id());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b);
    Ok(format!("{base}/{db}"))
}

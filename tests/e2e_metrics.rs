//! Operating Switchboard, end to end: the admin API on a listener of its own (and off the
//! public one), wrong admin tokens locked out per address, and the metrics as operators get
//! them: Debian's real Prometheus server scrapes Switchboard during a Telegram conversation
//! and the figures are read back through Prometheus's HTTP API.

mod common;

use std::process::Stdio;

use anyhow::Context;
use common::*;
use serde_json::Value;
use telegram_standin::{SentMessage, StandIn};

const SLOT: u32 = 9;
const TOKEN: &str = "4343:metrics-standin-token";
const ADMIN_TOKEN: &str = "metrics-admin-token-0123456789abcdef";

/// A Prometheus server of the test's own, scraping `target` every second.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> anyhow::Result<Self> {
        let bin = std::env::var("SWITCHBOARD_TEST_PROMETHEUS")
            .context("SWITCHBOARD_TEST_PROMETHEUS (set by scripts/test.sh)")?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files: ['{rules}']\n\
                 scrape_configs:\n  - job_name: switchboard\n    metrics_path: /metrics\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n",
                rules = repo_file("docs/monitoring/alerts.yml").display(),
            ),
        )?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting prometheus")?;
        let me = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        wait_for("Prometheus to be ready", || async {
            Ok(http
                .get(format!("{}/-/ready", me.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(()))
        })
        .await
        .with_context(|| me.log())?;
        Ok(me)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query that answers one sample, if it does.
    async fn value(&self, query: &str) -> anyhow::Result<Option<f64>> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(body["status"] == "success", "query {query}: {body}");
        let result = body["data"]["result"].as_array().context("result")?;
        Ok(match result.as_slice() {
            [one] => one["value"][1].as_str().and_then(|v| v.parse().ok()),
            _ => None,
        })
    }

    /// Waits until `query` answers a value that `ok` accepts, and returns it.
    async fn wait_value(&self, query: &str, ok: impl Fn(f64) -> bool) -> anyhow::Result<f64> {
        wait_for(&format!("Prometheus to answer {query}"), || async {
            Ok(self.value(query).await?.filter(|v| ok(*v)))
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn offer(sent: &[SentMessage]) -> Option<(i64, String)> {
    sent.iter().find_map(|m| {
        let data = m.reply_markup.as_ref()?["inline_keyboard"][0][0]["callback_data"]
            .as_str()?
            .to_owned();
        data.starts_with("accept:").then_some((m.message_id, data))
    })
}

/// A client whose connections come from `source` (any 127.x address is this machine).
fn client_from(source: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>()?)
        .build()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_routing_slos_and_the_admin_api_lives_apart() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let alex = tg.user(7301, "Alexandra", Some("alex_metrics"));
    let admin_addr = format!("127.0.0.1:{}", free_port()?);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [admin]\ntoken = {ADMIN_TOKEN:?}\nlisten = {admin_addr:?}\n\n[metrics]\n\n\
         [[responders]]\nid = \"alex\"\ndisplay_name = \"Alexandra\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n",
        api = tg.api_url(),
        chat = alex.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let admin = format!("http://{admin_addr}");
    let prometheus = Prometheus::start(&admin_addr).await?;
    let http = reqwest::Client::new();

    // --- the admin API and metrics are on their own listener, and only there ---------------------
    for path in ["/admin/v1/responders", "/metrics"] {
        let public = http
            .get(format!("{}{path}", sb.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        assert_eq!(
            public.status(),
            404,
            "{path} must not be on the public listener"
        );
    }
    let listed = http
        .get(format!("{admin}/admin/v1/responders"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(listed.status(), 200);

    // --- wrong admin tokens: one address is locked out, its right token included; others not ---
    let guesser = client_from("127.0.0.2")?;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let r = guesser
            .get(format!("{admin}/admin/v1/responders"))
            .bearer_auth(format!("guess-{n}"))
            .send()
            .await?;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let after: u64 = r.headers()["retry-after"].to_str()?.parse()?;
            assert!((1..=12).contains(&after), "Retry-After {after}");
        }
    }
    assert_eq!(statuses, [403, 403, 403, 403, 403, 429]);
    let right_but_locked = guesser
        .get(format!("{admin}/admin/v1/responders"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(
        right_but_locked.status(),
        429,
        "a locked address is refused whatever it sends"
    );
    let operator = client_from("127.0.0.3")?
        .get(format!("{admin}/admin/v1/responders"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(operator.status(), 200, "another address is not locked out");
    let log = sb.log_text();
    assert!(
        log.contains("too many wrong admin tokens"),
        "the lock-out is logged"
    );
    assert!(!log.contains("guess-"), "a presented token is never logged");

    // --- a conversation: offer, accept, two replies -------------------------------------------
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Is the shop open on Sunday?").await?;
    let sent = tg
        .wait_for_sent(alex.id, |s| offer(s).is_some(), WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("the offer: {e}"))?;
    let (offer_msg, data) = offer(&sent).context("offer")?;
    tg.user_presses(&alex, offer_msg, &data);
    tg.wait_for_sent(
        alex.id,
        |s| {
            s.iter().any(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|t| t.contains("You are now talking with"))
            })
        },
        WAIT,
    )
    .await
    .map_err(|e| anyhow::anyhow!("the accept: {e}"))?;
    tg.user_sends(&alex, "Yes, from ten to four.");
    visitor
        .sync_until("the first reply", |seen| {
            seen.iter().any(|s| s.body.contains("ten to four"))
        })
        .await?;
    visitor.send("And on holidays?").await?;
    tg.wait_for_sent(
        alex.id,
        |s| {
            s.iter()
                .any(|m| m.text.as_deref().is_some_and(|t| t.contains("holidays")))
        },
        WAIT,
    )
    .await
    .map_err(|e| anyhow::anyhow!("the second message: {e}"))?;
    tg.user_sends(&alex, "Closed on holidays.");
    visitor
        .sync_until("the second reply", |seen| {
            seen.iter().any(|s| s.body.contains("Closed on"))
        })
        .await?;

    // --- read back through Prometheus ---------------------------------------------------------
    let labels = r#"topic="support",platform="telegram""#;
    prometheus
        .wait_value(
            &format!("switchboard_reply_wait_seconds_count{{{labels}}}"),
            |v| v >= 2.0,
        )
        .await?;
    for slo in ["time_to_offer", "time_to_accept", "time_to_first_reply"] {
        let count = prometheus
            .wait_value(
                &format!("switchboard_{slo}_seconds_count{{{labels}}}"),
                |v| v > 0.0,
            )
            .await?;
        assert_eq!(count, 1.0, "{slo}: once per conversation");
        let median = prometheus
            .wait_value(
                &format!(
                    "histogram_quantile(0.5, sum by (le) (switchboard_{slo}_seconds_bucket{{{labels}}}))"
                ),
                |v| v.is_finite(),
            )
            .await?;
        assert!(median > 0.0 && median < 120.0, "{slo} median {median} s");
    }
    for (query, want) in [
        (r#"up{job="switchboard"}"#, 1.0),
        (
            r#"switchboard_offers_total{platform="telegram",event="sent"}"#,
            1.0,
        ),
        (
            r#"switchboard_offers_total{platform="telegram",event="accepted"}"#,
            1.0,
        ),
        (r#"switchboard_conversations{state="active"}"#, 1.0),
        (
            r#"switchboard_part_state{part="telegram",state="connected"}"#,
            1.0,
        ),
        (
            r#"switchboard_part_state{part="homeserver",state="connected"}"#,
            1.0,
        ),
        (r#"switchboard_outbox_pending{platform="telegram"}"#, 0.0),
    ] {
        prometheus.wait_value(query, |v| v == want).await?;
    }
    for query in [
        r#"switchboard_deliveries_total{platform="telegram",outcome="sent",kind="none"}"#,
        r#"sum(switchboard_transactions_total{outcome="acknowledged"})"#,
        r#"sum(switchboard_events_handled_total{source="homeserver",outcome="done"})"#,
        r#"sum(switchboard_events_handled_total{source="platform",outcome="done"})"#,
        r#"switchboard_delivery_seconds_count{platform="telegram"}"#,
        r#"switchboard_pacing_wait_seconds_count{platform="telegram"}"#,
        r#"switchboard_lane_wait_seconds_count{lane="to"}"#,
        r#"switchboard_lane_wait_seconds_count{lane="room"}"#,
        r#"switchboard_rate_limited_total{api="admin"}"#,
        r#"switchboard_transaction_record_seconds_count"#,
    ] {
        prometheus.wait_value(query, |v| v >= 1.0).await?;
    }

    // --- the example alert rules: valid, and every one evaluates ---------------------------------
    let promtool = std::path::Path::new(&std::env::var("SWITCHBOARD_TEST_PROMETHEUS")?)
        .with_file_name("promtool");
    let checked = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo_file("docs/monitoring/alerts.yml"))
        .output()?;
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    wait_for("every alert rule evaluated without error", || async {
        let body: Value = http
            .get(format!("{}/api/v1/rules", prometheus.url))
            .send()
            .await?
            .json()
            .await?;
        let rules: Vec<&Value> = body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        anyhow::ensure!(
            rules.iter().all(|r| r["health"] != "err"),
            "a rule failed: {body}"
        );
        Ok((rules.len() >= 10 && rules.iter().all(|r| r["health"] == "ok")).then_some(()))
    })
    .await?;

    // --- no label names a room, a visitor or a chat ---------------------------------------------
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("# HELP switchboard_time_to_first_reply_seconds"),
        "{text}"
    );
    for private in [
        room.as_str(),
        visitor.user_id.as_str(),
        &alex.id.to_string(),
        "alex_metrics",
    ] {
        assert!(!text.contains(private), "the metrics name {private:?}");
    }
    let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(series.len() > 20, "{text}");
    assert!(
        series.iter().all(|l| !l.contains('!') && !l.contains('@')),
        "a label carries an ID: {text}"
    );

    // --- the Grafana dashboard: every query runs, and names only metrics that exist --------------
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(repo_file(
        "docs/monitoring/grafana-dashboard.json",
    ))?)?;
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 14, "{exprs:?}");
    for expr in exprs {
        let query = expr
            .replace("$__rate_interval", "1m")
            .replace("$topic", ".*");
        prometheus
            .value(&query)
            .await
            .with_context(|| format!("dashboard query {expr}"))?;
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("switchboard_"))
        {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "the dashboard's {name} is not a metric Switchboard exports"
            );
        }
    }
    Ok(())
}

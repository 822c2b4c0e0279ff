//! A real load balancer in front of several Switchboard instances: Debian's HAProxy
//! (`scripts/haproxy.sh`, path in `SWITCHBOARD_TEST_HAPROXY`), run in the foreground with a
//! config of the test's own, as an operator would deploy it (see the operator guide).

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// HAProxy listening on one address and spreading requests over the instances.
pub struct LoadBalancer {
    child: Child,
    pub listen: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LoadBalancer {
    /// Starts HAProxy on `listen` in front of `instances`, configured as the operator guide
    /// says: the homeserver's pushes round robin to the live instances (checked on
    /// `/health`, since an instance waits for the homeserver's ping to be ready; they share
    /// the transaction order guard's state, so a push on one follows the one before it on
    /// another), everything else round robin to the ready ones (`/ready`); checked twice a
    /// second, out after two failed checks, and a request whose connection is refused sent
    /// to another.
    pub async fn start(listen: SocketAddr, instances: &[SocketAddr]) -> anyhow::Result<Self> {
        let bin = std::env::var("SWITCHBOARD_TEST_HAPROXY").context(
            "SWITCHBOARD_TEST_HAPROXY is not set: run the suite with scripts/test.sh, which installs HAProxy",
        )?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("haproxy.cfg");
        let servers: String = instances
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("    server i{i} {addr} check\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 4096\n\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 150s\n    \
                 timeout server 150s\n    retries 3\n    option redispatch 1\n\n\
                 frontend switchboard\n    bind {listen}\n    \
                 acl homeserver path_beg /_matrix/app/\n    use_backend pushes if homeserver\n    \
                 default_backend instances\n\n\
                 backend pushes\n    balance roundrobin\n    option httpchk GET /health\n    \
                 http-check expect status 200\n    \
                 default-server inter 500ms fall 2 rise 1 maxconn 8\n{servers}\n\
                 backend instances\n    balance roundrobin\n    option httpchk GET /ready\n    \
                 http-check expect status 200\n    default-server inter 500ms fall 2 rise 1\n\
                 {servers}"
            ),
        )?;
        let log = dir.path().join("haproxy.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let mut lb = Self {
            child,
            listen,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if let Some(status) = lb.child.try_wait()? {
                bail!("haproxy exited with {status}:\n{}", lb.log_text());
            }
            if Instant::now() > deadline {
                bail!("haproxy did not listen on {listen}:\n{}", lb.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Until every instance is ready (one is once the homeserver's ping reached it, which
        // goes through HAProxy: an instance started before it retries its ping with backoff),
        // and HAProxy counts them in (after a passed check).
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = |url: String| {
            let http = http.clone();
            async move {
                http.get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        };
        for addr in instances {
            while !ready(format!("http://{addr}/ready")).await {
                if Instant::now() > deadline {
                    bail!("instance {addr} did not become ready");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Two checks in a row through HAProxy, so both instances have been checked since.
        let mut passed = 0;
        while passed < 2 {
            passed = if ready(format!("{}/ready", lb.base())).await {
                passed + 1
            } else {
                0
            };
            if Instant::now() > deadline {
                bail!("haproxy counts no instance in:\n{}", lb.log_text());
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        Ok(lb)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

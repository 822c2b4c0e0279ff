//! What the crash bursts run Switchboard as: one instance, or (issue 17) two instances on one
//! PostgreSQL database behind a real load balancer, where one of them is killed: the one that
//! leads (it runs the platforms' receivers and the timers) or the other.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use switchboard_bridge::{Store, cluster::LEADER_LEASE};

use crate::common::*;

/// How long the instances' leases last in the bursts: short, so a takeover is seen quickly.
pub const LEASE_SECONDS: u64 = 3;

/// The Switchboard under test.
pub enum Under {
    One(Switchboard),
    /// Two instances, `a` and `b`, and HAProxy at the slot's address in front of them.
    Two {
        instances: Box<[Switchboard; 2]>,
        lb: LoadBalancer,
    },
}

impl Under {
    /// Two instances on a fresh PostgreSQL database, each configured with `config`, behind
    /// HAProxy at the slot's address (where Synapse and the visitors reach Switchboard).
    pub async fn two(env: &TestEnv, slot: &Slot, config: &str) -> anyhow::Result<Self> {
        let db = fresh_postgres_database("sbcluster").await?;
        let mut instances = Vec::new();
        let mut listens: Vec<SocketAddr> = Vec::new();
        for name in ["a", "b"] {
            let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let own = format!(
                "{config}\n[cluster]\ninstance = \"{name}\"\nlease_seconds = {LEASE_SECONDS}\n"
            );
            instances.push(
                Switchboard::start_instance(env, slot, listen, &own, &db, TEST_LOG_FILTER).await?,
            );
            listens.push(listen);
        }
        let lb = LoadBalancer::start(slot.listen, &listens).await?;
        let instances: [Switchboard; 2] = instances
            .try_into()
            .map_err(|_| anyhow::anyhow!("two instances"))?;
        let under = Self::Two {
            instances: Box::new(instances),
            lb,
        };
        // Both serve through the balancer before anything is sent.
        let store = under.store().await?;
        wait_for("a leader", || async {
            Ok(store.lease(LEADER_LEASE).await?)
        })
        .await?;
        Ok(under)
    }

    /// Where visitors (and Synapse) reach Switchboard.
    pub fn base(&self) -> String {
        match self {
            Self::One(sb) => sb.base.clone(),
            Self::Two { lb, .. } => lb.base(),
        }
    }

    pub async fn store(&self) -> anyhow::Result<Store> {
        match self {
            Self::One(sb) => sb.store().await,
            Self::Two { instances, .. } => instances[0].store().await,
        }
    }

    /// The one instance.
    pub fn one(&mut self) -> anyhow::Result<&mut Switchboard> {
        match self {
            Self::One(sb) => Ok(sb),
            Self::Two { .. } => anyhow::bail!("two instances run"),
        }
    }

    /// Which of the two instances leads now (by the leader lease's holder, "a/…" or "b/…").
    pub async fn leader(&self) -> anyhow::Result<Option<usize>> {
        let store = self.store().await?;
        let lease = store.lease(LEADER_LEASE).await?;
        store.close().await;
        Ok(lease.and_then(|l| NAMES.iter().position(|n| l.holder.starts_with(n))))
    }

    /// Hit number `n` of the two instances, the four ways in turn: the leader killed, the
    /// other one killed (each down for `pause`), the leader paused past its lease and
    /// resumed, both restarted one after the other. Returns what was done and, where the lead
    /// changed hands, how long after the hit a live instance held it.
    pub async fn hit(
        &mut self,
        n: usize,
        pause: Duration,
        tg: &telegram_standin::StandIn,
    ) -> anyhow::Result<(String, Option<Duration>)> {
        let leader = self.leader().await?.context("nobody leads")?;
        Ok(match n % 4 {
            0 => (
                "leader killed".into(),
                Some(self.kill_instance(leader, pause).await?),
            ),
            1 => {
                self.kill_instance(1 - leader, pause).await?;
                ("other killed".into(), None)
            }
            2 => {
                let (took, in_hand, refused) = self.pause_leader(leader, tg).await?;
                (
                    format!(
                        "leader paused with {in_hand} Telegram updates in hand, \
                         {refused} records refused by the fence"
                    ),
                    Some(took),
                )
            }
            _ => {
                self.restart_in_turn().await?;
                ("both restarted".into(), None)
            }
        })
    }

    fn instances(&mut self) -> anyhow::Result<&mut [Switchboard; 2]> {
        match self {
            Self::Two { instances, .. } => Ok(&mut **instances),
            Self::One(_) => anyhow::bail!("one instance runs"),
        }
    }

    /// SIGKILLs instance `i`, which leads, waits for the other to lead, and starts `i` again
    /// `pause` after the kill. Returns how long after the kill the other led.
    async fn kill_instance(&mut self, i: usize, pause: Duration) -> anyhow::Result<Duration> {
        let store = self.store().await?;
        let before = store.lease(LEADER_LEASE).await?;
        let killed = tokio::time::Instant::now();
        self.instances()?[i].kill();
        let took_over = match before {
            Some(lease) if lease.holder.starts_with(NAMES[i]) => {
                next_leader(&store, lease.epoch).await?;
                killed.elapsed()
            }
            _ => Duration::ZERO,
        };
        store.close().await;
        tokio::time::sleep(pause.saturating_sub(killed.elapsed())).await;
        self.instances()?[i].start_again().await?;
        Ok(took_over)
    }

    /// SIGSTOPs the leader `i` until the other leads, then a second more, and resumes it: it
    /// must then do nothing as leader. Its Telegram receiver is the check: had it polled
    /// again, Telegram (the stand-in) would have ended one of the two polls with 409.
    /// Returns how long the other took to lead, how many updates the paused one's long poll
    /// was handed while it was stopped (it holds them when it resumes; the new leader gets
    /// them too, as none was confirmed), and how many times its receiver's record was refused
    /// by the fence once it resumed (at most once per batch in hand: the refusal stops the
    /// batch; none if it saw its term end first).
    async fn pause_leader(
        &mut self,
        i: usize,
        tg: &telegram_standin::StandIn,
    ) -> anyhow::Result<(Duration, usize, usize)> {
        let store = self.store().await?;
        let epoch = store.lease(LEADER_LEASE).await?.map_or(0, |l| l.epoch);
        let pid = self.instances()?[i].pid().context("not running")?;
        let refusals = |log: String| log.matches(FENCED_OFF).count();
        let refused_before = refusals(self.instances()?[i].log_text());
        let paused = tokio::time::Instant::now();
        signal(pid, "-STOP")?;
        // Only the leader polls, and it is stopped: the polls still open are its own.
        let open: Vec<usize> = (tg.requests().iter().enumerate())
            .filter(|(_, q)| q.method_lower == "getupdates" && q.status == 0)
            .map(|(n, _)| n)
            .collect();
        // Someone new writes to the bot: an open poll is answered with it at once, so the
        // stopped leader holds an update when it resumes. (Asked for a topic, they start no
        // conversation, so the counts of the burst are untouched.)
        let stranger = tg.user(1_699_000 + epoch, "Stranger", None);
        tg.user_sends(&stranger, "written while the leader was stopped");
        let waited = next_leader(&store, epoch).await;
        let took_over = paused.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let requests = tg.requests();
        let in_hand: usize = open
            .iter()
            .filter_map(|n| requests.get(*n))
            .filter(|q| q.status == 200)
            .map(|q| q.items)
            .sum();
        signal(pid, "-CONT")?;
        waited?;
        store.close().await;
        let conflicts = || {
            tg.requests()
                .iter()
                .filter(|q| q.method_lower == "getupdates" && q.status == 409)
                .count()
        };
        // The poll it had under way was ended (409) when the new leader polled; nothing
        // more may come from it.
        let before = conflicts();
        tokio::time::sleep(Duration::from_secs(LEASE_SECONDS)).await;
        anyhow::ensure!(
            conflicts() == before,
            "the paused leader polled Telegram again after it resumed, {} times",
            conflicts() - before
        );
        let log = self.instances()?[i].log_text();
        anyhow::ensure!(
            log.contains("lost the lead"),
            "the paused leader did not say it lost the lead"
        );
        Ok((took_over, in_hand, refusals(log) - refused_before))
    }

    /// SIGTERMs each instance and starts it again, one after the other, as a rolling upgrade
    /// does.
    async fn restart_in_turn(&mut self) -> anyhow::Result<()> {
        for i in 0..2 {
            let instance = &mut self.instances()?[i];
            instance.terminate()?;
            instance.start_again().await?;
        }
        Ok(())
    }
}

/// What an instance logs when the fence refuses its receiver's record (`bridge/sink.rs`).
const FENCED_OFF: &str = "this instance no longer leads, so it is not acknowledged";

/// The instances' names, as their holder names begin.
const NAMES: [&str; 2] = ["a/", "b/"];

/// Waits until the lead is held at an epoch after `epoch`.
async fn next_leader(store: &Store, epoch: i64) -> anyhow::Result<()> {
    wait_for("another instance to lead", || async {
        Ok(store
            .lease(LEADER_LEASE)
            .await?
            .filter(|l| l.epoch > epoch)
            .map(|_| ()))
    })
    .await
}

fn signal(pid: u32, which: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {which} {pid} failed");
    Ok(())
}

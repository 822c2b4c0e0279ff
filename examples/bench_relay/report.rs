//! Samples, percentiles and the verdicts printed next to the targets.

use std::time::Instant;

/// Milliseconds since `since`.
pub fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One latency path: its samples in milliseconds.
pub struct Row {
    pub what: String,
    pub samples: Vec<f64>,
}

impl Row {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            samples: vec![],
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    pub fn p50(&self) -> f64 {
        percentile(&self.sorted(), 50.0)
    }

    /// `| what | samples | p50 | p95 | min | max |` followed by the target cells given.
    pub fn markdown(&self, samples: &str, target: &str, verdict: &str) -> String {
        let s = self.sorted();
        format!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |",
            self.what,
            samples,
            percentile(&s, 50.0),
            percentile(&s, 95.0),
            s[0],
            s[s.len() - 1],
            target,
            verdict,
        )
    }
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The latency target for a bridged path: p50 within twice the floor plus 3 ms.
pub struct LatencyTarget {
    pub floor_p50: f64,
}

impl LatencyTarget {
    pub fn limit(&self) -> f64 {
        2.0 * self.floor_p50 + 3.0
    }

    pub fn cell(&self) -> String {
        format!("≤ 2 × {:.1} + 3 = {:.1} ms", self.floor_p50, self.limit())
    }

    /// The row with its target and verdict.
    pub fn judge(&self, row: &Row, samples: &str) -> String {
        row.markdown(samples, &self.cell(), verdict(row.p50() <= self.limit()))
    }
}

/// The target of a path that crosses the homeserver once and the test mail server once (the
/// email paths): each server's own floor from the same run, plus the 3 ms the issue allows
/// Switchboard. The test mail server's hop (over half a second, 500 ms of it Dovecot's mailbox
/// watcher holding every change back before IDLE announces it, `NOTIFY_DELAY_MSECS` in its
/// source) is not Switchboard's to cut, and `2 × floor + 3 ms` from Synapse alone does not
/// allow for it.
pub struct ViaMailTarget {
    pub homeserver_p50: f64,
    pub mail_p50: f64,
}

impl ViaMailTarget {
    pub fn limit(&self) -> f64 {
        self.homeserver_p50 + self.mail_p50 + 3.0
    }

    /// The row with its target and verdict.
    pub fn judge(&self, row: &Row, samples: &str) -> String {
        let cell = format!(
            "≤ {:.1} + {:.1} (mail) + 3 = {:.1} ms",
            self.homeserver_p50,
            self.mail_p50,
            self.limit()
        );
        row.markdown(samples, &cell, verdict(row.p50() <= self.limit()))
    }
}

/// Progress for whoever watches the run; stdout carries only the report.
pub fn progress(what: &str) {
    eprintln!("[bench] {what}");
}

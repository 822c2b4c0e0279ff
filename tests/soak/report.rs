//! The soak's figures as they are published: a table of the windows, a line of totals, and
//! where the time went.

use super::{
    FD_GROWTH, OUTBOX_METERS, Outcome, P99_FACTOR, P99_SLACK_MS, RSS_GROWTH_MIB, TASK_GROWTH,
    Window,
    stages::{TO_RESPONDER_STAGES, TO_VISITOR_STAGES},
};
use crate::common::percentile;

impl Outcome {
    /// The figures: a table of the windows and a line of totals.
    pub fn rows(&self) -> String {
        let span = self.plan.duration.as_secs_f64() / self.plan.windows as f64;
        let mut out = String::from(
            "| window | messages each way | → responder p50 / p99 ms | → visitor p50 / p99 ms | RSS MiB | threads | fds (sockets) | tasks | DB connections |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        let line = |name: String, w: &Window| {
            format!(
                "| {name} | {} / {} | {} / {} | {} / {} | {:.1} | {:.0} | {} ({}) | {:.0} | {:.0} |\n",
                w.to_responder_ms.len(),
                w.to_visitor_ms.len(),
                ms(&w.to_responder_ms, 50.0),
                ms(&w.to_responder_ms, 99.0),
                ms(&w.to_visitor_ms, 50.0),
                ms(&w.to_visitor_ms, 99.0),
                w.rss_mib,
                w.threads,
                w.fds,
                w.sockets,
                w.tasks,
                w.db_connections,
            )
        };
        for (i, w) in self.windows.iter().enumerate() {
            let name = format!(
                "{} ({:.0}–{:.0} s){}",
                i + 1,
                i as f64 * span,
                (i + 1) as f64 * span,
                if i == 0 { ", warm-up" } else { "" }
            );
            out.push_str(&line(name, w));
        }
        out.push_str(&line("after the load".into(), &self.after));
        let all = |pick: fn(&Window) -> &Vec<f64>| -> Vec<f64> {
            self.windows.iter().flat_map(|w| pick(w).clone()).collect()
        };
        let (tr, tv) = (all(|w| &w.to_responder_ms), all(|w| &w.to_visitor_ms));
        out.push_str(&format!(
            "\nSet-up of the {} conversations took {:.0} s; Switchboard's resident memory was {:.1} MiB before it. \
             Visitor → responder: {} sent, {} lost, {} doubled, {} out of order; p50 {:.0} ms, p99 {:.0} ms over the run. \
             Responder → visitor: {} sent, {} lost, {} doubled, {} out of order; p50 {:.0} ms, p99 {:.0} ms. \
             Bounds: in the second half of the run and after it, resident memory within {RSS_GROWTH_MIB} MiB, \
             file descriptors within {FD_GROWTH} and live tasks within {TASK_GROWTH} of the highest reading of the \
             first half after the warm-up (windows 2 to {}); each later window's p99 within {P99_FACTOR} × that \
             half's highest + {P99_SLACK_MS} ms.\n",
            self.plan.conversations,
            self.setup.as_secs_f64(),
            self.before_rss_mib,
            self.to_responder.sent,
            self.to_responder.lost,
            self.to_responder.doubled,
            self.to_responder.out_of_order,
            percentile(&tr, 50.0),
            percentile(&tr, 99.0),
            self.to_visitor.sent,
            self.to_visitor.lost,
            self.to_visitor.doubled,
            self.to_visitor.out_of_order,
            percentile(&tv, 50.0),
            percentile(&tv, 99.0),
            self.windows.len() - self.halves().1.len(),
        ));
        out.push_str(&self.stage_rows());
        out
    }

    /// Where each message's time went, window by window, from Switchboard's store: a
    /// message's total above is the sum of its steps here, to a responder up to the stand-in's
    /// record (the last step, recording the call, comes after the total's end).
    fn stage_rows(&self) -> String {
        let mut out = format!(
            "\nWhere the time went, from Switchboard's store and the stand-in's record of each Bot API call \
             (ms; messages with every step recorded). To a responder: {}. To a visitor: {}. \
             The outbox step to a responder split by Switchboard's own histograms, as means over the window: {}.\n\n\
             | window | → responder, timed (tried more than once) | p50 | p99 | outbox, mean | → visitor, timed | p50 | p99 |\n\
             |---|---|---|---|---|---|---|---|\n",
            TO_RESPONDER_STAGES.join(" / "),
            TO_VISITOR_STAGES.join(" / "),
            OUTBOX_METERS.map(|(name, _)| name).join(" / "),
        );
        for (i, w) in self.windows.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} ({}) | {} | {} | {} | {} | {} | {} |\n",
                i + 1,
                w.to_responder_stages.len(),
                w.to_responder_retried,
                cell(&w.to_responder_stages, 50.0),
                cell(&w.to_responder_stages, 99.0),
                w.outbox_means_ms
                    .map(|m| if m.is_nan() {
                        "–".to_owned()
                    } else {
                        format!("{m:.0}")
                    })
                    .join(" / "),
                w.to_visitor_stages.len(),
                cell(&w.to_visitor_stages, 50.0),
                cell(&w.to_visitor_stages, 99.0),
            ));
        }
        out
    }
}

/// One percentile of each step, joined: "p(step 1) / p(step 2) / …".
fn cell<const N: usize>(stages: &[[f64; N]], p: f64) -> String {
    (0..N)
        .map(|i| ms(&stages.iter().map(|s| s[i]).collect::<Vec<_>>(), p))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A percentile in whole milliseconds; a window without messages (after the load) has none
/// to show.
fn ms(values: &[f64], p: f64) -> String {
    match percentile(values, p) {
        x if x.is_nan() => "–".to_owned(),
        x => format!("{x:.0}"),
    }
}

//! What a running process holds, read from `/proc` (Linux), and the percentile the reports
//! use: shared by the abuse flood and the soak.

/// The `p`th percentile (nearest rank) of `values`; NaN when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// A field of `/proc/<pid>/status` as a number (its first word: kB for `VmRSS`, a count for
/// `Threads`); NaN once the process is gone.
fn status_field(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Resident memory in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_field(pid, "VmRSS:") / 1024.0
}

/// Operating-system threads.
pub fn threads(pid: u32) -> f64 {
    status_field(pid, "Threads:")
}

/// Open file descriptors, and how many of them are sockets (network and database
/// connections, listeners): `(all, sockets)`.
pub fn descriptors(pid: u32) -> (usize, usize) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let mut all = 0;
    let mut sockets = 0;
    for entry in dir.flatten() {
        all += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        {
            sockets += 1;
        }
    }
    (all, sockets)
}

/// The end of a measured run (abuse, soak): adds what went wrong to `report`, prints it,
/// writes it to the file `report_var` names when set (the script puts it in
/// `docs/reliability.md`), and fails if anything went wrong.
pub fn finish_report(
    mut report: String,
    faults: &[String],
    report_var: &str,
) -> anyhow::Result<()> {
    if !faults.is_empty() {
        report.push_str("\nWhat went wrong:\n\n");
        for f in faults {
            report.push_str(&format!("- {f}\n"));
        }
    }
    eprintln!("{report}");
    if let Ok(path) = std::env::var(report_var) {
        std::fs::write(path, &report)?;
    }
    anyhow::ensure!(faults.is_empty(), "the run found:\n{}", faults.join("\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn this_process_is_read() {
        let me = std::process::id();
        assert!(rss_mib(me) > 0.0);
        assert!(threads(me) >= 1.0);
        let (all, sockets) = descriptors(me);
        assert!(all >= 3 && sockets <= all);
        assert!(rss_mib(u32::MAX).is_nan());
    }
}

//! What a running process holds, read from `/proc` (Linux): shared by the measured runs
//! (the abuse flood and the soak).

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

#[cfg(test)]
mod tests {
    use super::*;

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

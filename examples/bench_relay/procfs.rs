//! What the kernel says about the Switchboard process: CPU time and resident memory.

use anyhow::Context;

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/<pid>/stat`.
pub fn clock_ticks() -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// User plus system CPU time the process has used so far, in milliseconds.
pub fn cpu_ms(pid: u32, ticks_per_s: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' start at field 3.
    let after = stat.rsplit_once(')').context("odd /proc/pid/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) * 1000.0 / ticks_per_s)
}

/// Resident set size (`VmRSS`) in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

/// Bytes the process has handed to `write` and its kind so far, and how many such calls
/// (`wchar`, `syscw` in `/proc/<pid>/io`), files and sockets alike: in a flood, its
/// database's writes (the flood's answers are a few bytes each).
pub fn written(pid: u32) -> anyhow::Result<(u64, u64)> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        Ok(io
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/pid/io"))?
            .trim()
            .parse()?)
    };
    Ok((field("wchar:")?, field("syscw:")?))
}

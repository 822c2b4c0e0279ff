//! The figures and the ending of a measured run's report (the abuse flood, the soak).

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
}

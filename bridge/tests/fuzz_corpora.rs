//! Replays, on stable Rust, every input the fuzzers kept (`fuzz/corpus/<target>/`) and every
//! finding turned regression (`fuzz/regressions/<target>/`) through the same function the
//! fuzz target runs (`switchboard_bridge::fuzzing`), so the ordinary test suite guards what
//! coverage-guided fuzzing found: a change that makes any of them panic fails here.

use std::path::{Path, PathBuf};

use switchboard_bridge::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    for (name, _) in TARGETS {
        let target = fuzz_dir().join(format!("fuzz_targets/{name}.rs"));
        let source = std::fs::read_to_string(&target)
            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        assert!(
            source.contains(&format!("fuzzing::{name}(")),
            "{} does not run fuzzing::{name}",
            target.display()
        );
        assert!(
            !inputs(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "no corpus for {name}"
        );
    }
}

#[test]
fn every_kept_input_and_every_finding_still_passes() {
    let mut replayed = 0;
    for (name, run) in TARGETS {
        for dir in ["corpus", "regressions"] {
            for input in inputs(&fuzz_dir().join(dir).join(name)) {
                let data = std::fs::read(&input).expect("readable");
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(
                    outcome.is_ok(),
                    "{name}: {} fails (replay: cargo +nightly fuzz run {name} {})",
                    input.display(),
                    input.display()
                );
                replayed += 1;
            }
        }
    }
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs");
}

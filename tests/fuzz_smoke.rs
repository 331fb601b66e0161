//! Every fuzz target builds and runs briefly from its checked-in seeds
//! (`scripts/fuzz-smoke.sh`, `-s none`), so a refactor that breaks a target, or a
//! change that makes a seed crash or fail an invariant, fails the test run.
//! `FUZZ_SMOKE_SECS` sets the seconds per target (default 5). Needs cargo-fuzz
//! (`cargo install cargo-fuzz`; `.ci/run` installs it when missing).

use std::process::Command;

#[test]
fn every_fuzz_target_runs_clean_from_its_seeds() {
    let root = env!("CARGO_MANIFEST_DIR");
    let has_cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_cargo_fuzz,
        "cargo-fuzz is missing: `cargo install cargo-fuzz` (or run `bash .ci/run`)"
    );
    let secs = std::env::var("FUZZ_SMOKE_SECS").unwrap_or_else(|_| "5".into());
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/fuzz-smoke.sh"))
        .arg(&secs)
        // The outer `cargo test` may point cargo elsewhere; the fuzz crate keeps
        // its own target directory.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run scripts/fuzz-smoke.sh");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fuzz smoke failed:\n{log}");
    assert!(log.contains("targets clean"), "{log}");
    eprintln!("{log}");
}

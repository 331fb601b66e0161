//! Every fuzz target builds and runs briefly from its checked-in seeds
//! (`scripts/fuzz-smoke.sh`, `-s none`), so a refactor that breaks a target, or a
//! change that makes a seed crash or fail an invariant, fails the test run.
//!
//! Each target runs its seeds and then a fixed number of mutated inputs from a
//! fixed libFuzzer seed (`FUZZ_SMOKE_RUNS`, default 20,000; `FUZZ_SMOKE_SEED`,
//! default 1), so the verdict is the same on every machine and every run. A time
//! limit (`FUZZ_SMOKE_SECS`, used instead when set) tried a machine-dependent
//! number of inputs: a crash the fuzzer reaches only now and then failed one CI run
//! in several. New inputs come from real fuzzing sessions, whose crashes become
//! seeds. Needs cargo-fuzz (`cargo install cargo-fuzz`; `.ci/run` installs it when
//! missing).

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
    let mut smoke = Command::new("bash");
    smoke.arg(format!("{root}/scripts/fuzz-smoke.sh"));
    match std::env::var("FUZZ_SMOKE_SECS") {
        Ok(secs) => {
            smoke.arg(secs).env_remove("FUZZ_SMOKE_RUNS");
        }
        Err(_) => {
            let runs = std::env::var("FUZZ_SMOKE_RUNS").unwrap_or_else(|_| "20000".into());
            smoke.env("FUZZ_SMOKE_RUNS", runs);
        }
    }
    let out = smoke
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

//! Replaying the fuzz seeds in the ordinary test suite: the one function every crate's
//! `fuzz_corpus` test calls, so `cargo test` keeps each target's seeds and its
//! invariants honest on the stable toolchain (the fuzzer itself needs cargo-fuzz).

use std::path::PathBuf;

/// The seed folder of fuzz target `target` (`fuzz/corpus/<target>/`).
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs `run` (the target's fuzz body) on every file of its seed folder; panics naming
/// the file whose run panicked, or when the folder holds fewer than two seeds (a
/// folder emptied by mistake must not pass silently).
pub fn replay(target: &str, run: fn(&[u8])) {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("fuzz body {target} failed on {}", path.display());
        }
        count += 1;
    }
    assert!(
        count >= 2,
        "{target}: seed files missing in {}",
        dir.display()
    );
}

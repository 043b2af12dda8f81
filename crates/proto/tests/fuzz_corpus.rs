//! Replays every seed file of fuzz/corpus/<target>/ through the same function the fuzz
//! target calls, so the normal test suite keeps the fuzzers' invariants and the seeds
//! honest without a nightly toolchain.

use std::fs;
use std::path::PathBuf;

use correio_proto::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if !path.is_file() {
            continue;
        }
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("fuzz body {target} failed on {}", path.display());
        }
        count += 1;
    }
    assert!(count > 0, "no seed files in {}", dir.display());
}

#[test]
fn framer_corpus() {
    replay("framer", fuzzing::framer);
}

#[test]
fn command_corpus() {
    replay("command", fuzzing::command);
}

#[test]
fn response_corpus() {
    replay("response", fuzzing::response);
}

#[test]
fn unstuffer_corpus() {
    replay("unstuffer", fuzzing::unstuffer);
}

#[test]
fn sasl_corpus() {
    replay("sasl", fuzzing::sasl);
}

#[test]
fn capa_corpus() {
    replay("capa", fuzzing::capa);
}

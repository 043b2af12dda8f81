//! Replays every seed of fuzz/corpus/lmtp_input/ through the fuzz body, so the normal
//! suite keeps the fuzzer's invariants without a nightly toolchain.

use std::fs;
use std::path::PathBuf;

#[test]
fn lmtp_input_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/lmtp_input");
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| correio_server::lmtp::fuzzing::lmtp_input(&data)).is_err() {
            panic!("lmtp_input failed on {}", path.display());
        }
        count += 1;
    }
    assert!(count > 0);
}

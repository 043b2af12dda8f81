//! Replays every seed of fuzz/corpus/client_session/ through the client fuzz body.

use std::fs;
use std::path::PathBuf;

#[test]
fn client_session_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/client_session");
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        correio_proto::client::fuzz_client_session(&fs::read(&p).unwrap());
        n += 1;
    }
    assert!(n >= 4, "seeds missing in {}", dir.display());
}

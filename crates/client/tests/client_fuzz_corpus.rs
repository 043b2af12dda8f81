//! Replays the seed corpus of this crate's fuzz targets through their bodies.

use std::fs;
use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        run(&fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 3, "seeds missing in {}", dir.display());
}

#[test]
fn autoconfig_seeds() {
    replay("client_autoconfig", correio_client::fuzzing::autoconfig);
}

#[test]
fn http_chunked_seeds() {
    replay("client_http_chunked", correio_client::fuzzing::http_chunked);
}

#[test]
fn imap_response_seeds() {
    replay(
        "client_imap_response",
        correio_client::fuzzing::imap_response,
    );
}

#[test]
fn trace_mask_seeds() {
    replay("client_trace_mask", correio_client::fuzzing::trace_mask);
}

#[test]
fn cert_exact_seeds() {
    replay("client_cert_exact", correio_client::fuzzing::cert_exact);
}

//! Replays the seed corpus of this crate's fuzz targets through their bodies.

use correio_testkit::fuzz::replay;

#[test]
fn autoconfig_seeds() {
    replay("client_autoconfig", correio_client::fuzzing::autoconfig);
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

//! Replays every seed of fuzz/corpus/lmtp_input/ and fuzz/corpus/lmtp_session/ through
//! the fuzz bodies, so the normal suite keeps the fuzzers' invariants without a nightly
//! toolchain.

use correio_proto::lmtp::fuzzing;

#[test]
fn lmtp_input_corpus() {
    correio_testkit::fuzz::replay("lmtp_input", fuzzing::lmtp_input);
}

#[test]
fn lmtp_session_corpus() {
    correio_testkit::fuzz::replay("lmtp_session", fuzzing::lmtp_session);
}

//! Replays every seed of fuzz/corpus/lmtp_input/ through the fuzz body, so the normal
//! suite keeps the fuzzer's invariants without a nightly toolchain.

#[test]
fn lmtp_input_corpus() {
    correio_testkit::fuzz::replay("lmtp_input", correio_server::lmtp::fuzzing::lmtp_input);
}

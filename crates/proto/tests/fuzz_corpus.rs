//! Replays every seed file of fuzz/corpus/<target>/ through the same function the fuzz
//! target calls, so the normal test suite keeps the fuzzers' invariants and the seeds
//! honest without a nightly toolchain.

use correio_testkit::fuzz::replay;

use correio_proto::fuzzing;

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

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_proto::lmtp::fuzzing::lmtp_input(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_proto::server::fuzz_session(data));

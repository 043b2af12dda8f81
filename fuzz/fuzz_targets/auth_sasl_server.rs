#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_auth::fuzzing::sasl_server(data));

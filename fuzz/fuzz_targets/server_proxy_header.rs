#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_server::proxy::fuzz_header(data));

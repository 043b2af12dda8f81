#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_server::import::fuzz_dovecot_config(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_users::fuzzing::fuzz_templates(data));

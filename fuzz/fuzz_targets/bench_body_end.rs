#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_bench::fuzzing::body_end(data));

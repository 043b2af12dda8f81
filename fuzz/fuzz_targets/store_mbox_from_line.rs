#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_store::fsck::fuzzing::from_line(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| correio_store::fuzzing::mailbox_ref(data));

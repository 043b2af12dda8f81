#![no_main]

// The writers' transforms: the mbox round trip and the CRLF-storage normalizer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    correio_store::fuzzing::mbox_roundtrip(data);
    correio_store::fuzzing::normalizer_crlf(data);
});

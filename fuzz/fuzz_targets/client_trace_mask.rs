#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    correio_client::fuzzing::trace_mask(data);
});

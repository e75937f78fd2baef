#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    anchormq_core::fuzz_entry::key_file(data);
});

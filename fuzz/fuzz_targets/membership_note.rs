#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    anchormq_core::fuzz_entry::membership_note(data);
});

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinproxy::fuzzing::host_match(data));

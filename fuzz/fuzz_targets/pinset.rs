#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinproxy::fuzzing::pinset(data));

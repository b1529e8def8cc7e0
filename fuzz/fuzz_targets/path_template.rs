//! Fuzz target: see [`sluice_fuzz::contracts::path_template`] for the contract it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::contracts::path_template(data));

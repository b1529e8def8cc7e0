//! Fuzz target: see [`sluice_fuzz::contracts::parse_payload`] for the contract it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::contracts::parse_payload(data));

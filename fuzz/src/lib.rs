//! Fuzz targets of Sluice's input-facing entry points; the contracts live in [`contracts`] so
//! that the stable property-based pass (`transforms/tests/fuzz_props.rs`) checks the same.
//!
//! Run them with `scripts/fuzz.sh [SECONDS_PER_TARGET]` (needs a nightly toolchain and
//! `cargo install cargo-fuzz`).

pub mod contracts;

#[global_allocator]
static ALLOC: contracts::CountingAlloc = contracts::CountingAlloc;

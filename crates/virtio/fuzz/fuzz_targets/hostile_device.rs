//! Arbitrary bytes drive a device that writes arbitrary used entries and
//! indices; the harness panics (= a crash) on any violated queue invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

fuzz_target!(|data: &[u8]| {
    hostile::hostile_device(data);
});

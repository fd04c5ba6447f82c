#![no_main]
//! The client request scanner: resumability at fuzzer-chosen cuts, limits, Redis error texts,
//! bounded allocation. Input layout and properties: `keyward_fuzz_checks::check_request_scanner`.

use keyward_fuzz_checks::{self as fuzz_checks, TrackingAlloc};
use libfuzzer_sys::fuzz_target;

// Lets the checks measure the largest single allocation.
#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fuzz_target!(|data: &[u8]| fuzz_checks::check_request_scanner(data));

#![no_main]
//! The client request scanner: resumability at fuzzer-chosen cuts, limits, Redis error texts,
//! bounded allocation. Input layout and properties: `keyward::fuzz_checks::check_request_scanner`.

use keyward::fuzz_checks::{self, TrackingAlloc};
use libfuzzer_sys::fuzz_target;

// Lets the checks measure the largest single allocation.
#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fuzz_target!(|data: &[u8]| fuzz_checks::check_request_scanner(data));

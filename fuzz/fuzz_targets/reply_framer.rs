#![no_main]
//! The upstream reply framer: resumability, frame lengths, deep nesting, bounded allocation, and
//! `redis-protocol`'s decoder as a differential oracle. Input layout and properties:
//! `keyward_fuzz_checks::check_reply_framer`.

use keyward_fuzz_checks::{self as fuzz_checks, TrackingAlloc};
use libfuzzer_sys::fuzz_target;

// Lets the checks measure the largest single allocation.
#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fuzz_target!(|data: &[u8]| fuzz_checks::check_reply_framer(data));

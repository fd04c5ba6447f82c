#![no_main]
//! The CLUSTER SHARDS / CLUSTER SLOTS parsers on frames decoded from arbitrary bytes: no panic, and
//! every accepted slot map is consistent with sane addresses. Input layout and properties:
//! `keyward_fuzz_checks::check_cluster_topology`.

use keyward_fuzz_checks::{self as fuzz_checks, TrackingAlloc};
use libfuzzer_sys::fuzz_target;

// Lets the checks measure the largest single allocation.
#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fuzz_target!(|data: &[u8]| fuzz_checks::check_cluster_topology(data));

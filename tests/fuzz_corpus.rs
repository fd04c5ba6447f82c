//! Replays every committed fuzz input (`fuzz/corpus/<target>/` and the regressions kept in
//! `fuzz/regressions/<target>/`) through the same property checks the cargo-fuzz targets run
//! (the `keyward-fuzz-checks` crate in `fuzz-checks/`), on stable Rust and in the normal test suite.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use keyward_fuzz_checks::{self as fuzz_checks, TrackingAlloc};

// The allocation bounds of the checks need the tracking allocator.
#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in [
        fuzz.join("corpus").join(target),
        fuzz.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`; reports every failing file, not just the first.
fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn request_scanner_corpus() {
    replay("request_scanner", fuzz_checks::check_request_scanner);
}

#[test]
fn reply_framer_corpus() {
    replay("reply_framer", fuzz_checks::check_reply_framer);
}

#[test]
fn cluster_topology_corpus() {
    replay("cluster_topology", fuzz_checks::check_cluster_topology);
}

#[test]
fn the_allocation_probe_is_live() {
    // Without a working probe the allocation bounds would pass vacuously.
    let ((), largest) = fuzz_checks::largest_allocation(|| drop(vec![0u8; 1 << 20]));
    assert!(largest >= 1 << 20, "{largest}");
}

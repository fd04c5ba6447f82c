//! Named checks run one after the other in one test: a failing check is reported with its name
//! and the next still runs, so one expensive set-up (a cluster) serves many checks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// Runs named checks one after the other, catching a failing one so that the next still runs;
/// [`Checks::finish`] fails the test with every failed check's name and message.
pub struct Checks {
    test: &'static str,
    failed: Vec<String>,
}

impl Checks {
    pub fn new(test: &'static str) -> Self {
        Checks {
            test,
            failed: Vec::new(),
        }
    }

    pub fn run(&mut self, name: &str, check: impl FnOnce()) {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(check)) {
            Ok(()) => eprintln!(
                "[{}] check {name}: ok ({} ms)",
                self.test,
                started.elapsed().as_millis()
            ),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(no message)".into());
                eprintln!("[{}] check {name}: FAILED: {message}", self.test);
                self.failed.push(format!("{name}: {message}"));
            }
        }
    }

    pub fn finish(self) {
        if !self.failed.is_empty() {
            panic!(
                "{} check(s) of {} failed:\n- {}",
                self.failed.len(),
                self.test,
                self.failed.join("\n- ")
            );
        }
    }
}

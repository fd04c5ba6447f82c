//! keyward's shutdown and reload signals as a session sees them.

use std::pin::Pin;

use tokio::sync::watch;

/// keyward's shutdown signal, as one future that a session keeps for its whole life.
///
/// `watch::Receiver::changed()` made afresh on every turn of a session's loop puts a waiter in
/// the channel's list, under its lock, and takes it out again whenever the loop wakes for
/// anything else: per request, for every client. Kept, it is registered once.
pub struct ShutdownSignal {
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    fired: bool,
}

impl ShutdownSignal {
    pub fn new(mut stop: watch::Receiver<bool>) -> Self {
        ShutdownSignal {
            // A dropped sender also means keyward is going away.
            signal: Box::pin(async move {
                let _ = stop.wait_for(|&stop| stop).await;
            }),
            fired: false,
        }
    }

    /// Resolves once keyward begins shutting down; after that, never again.
    pub async fn fired(&mut self) {
        if self.fired {
            return std::future::pending().await;
        }
        (&mut self.signal).await;
        self.fired = true;
    }
}

/// Reloads of the configuration, as a future a session keeps: a client logged in as a named
/// user watches it, so that a reload that removes the user (or changes the password)
/// disconnects the client at once, not at its next request. Sessions of other clients never
/// poll it.
pub struct ReloadSignal {
    changes: watch::Receiver<u64>,
    next: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl ReloadSignal {
    pub fn new(changes: watch::Receiver<u64>) -> Self {
        ReloadSignal {
            changes,
            next: None,
        }
    }

    /// Resolves at the next reload.
    pub async fn fired(&mut self) {
        let next = self.next.get_or_insert_with(|| {
            let mut changes = self.changes.clone();
            changes.mark_unchanged();
            Box::pin(async move {
                if changes.changed().await.is_err() {
                    // keyward is going away: the shutdown signal says so.
                    std::future::pending::<()>().await;
                }
            })
        });
        next.await;
        self.next = None;
    }
}

//! keyward's shutdown signal as a session sees it.

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

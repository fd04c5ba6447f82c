//! Why no slot map could be had: a reply of the wrong shape, or no seed that would give one.
//!
//! Shared by the parsers (which only ever say [`TopologyError::Malformed`]) and by discovery,
//! which names every seed it tried with its own cause, because "no cluster seed node gave a slot
//! map" is what stops keyward at start-up and the operator needs to know why for each seed.

use std::fmt;
use std::io;

/// Why the slot map could not be built.
#[derive(Debug)]
pub enum TopologyError {
    /// [`discover`](super::discover) was given no seed at all.
    NoSeeds,
    /// A reply did not have the shape of a `CLUSTER SHARDS` / `CLUSTER SLOTS` reply.
    Malformed(String),
    /// No seed gave a usable map; one entry per seed, in the order they were tried.
    AllSeedsFailed(Vec<(String, SeedFailure)>),
}

/// What went wrong with one seed.
#[derive(Debug)]
pub enum SeedFailure {
    /// The TCP connection could not be opened, or the TLS handshake failed (a refused
    /// certificate included).
    Connect(io::Error),
    /// Nothing happened within the timeout; says what keyward was waiting for.
    Timeout(&'static str),
    /// Reading or writing failed, or the node closed the connection.
    Io(io::Error),
    /// The node refused keyward's credentials; carries Redis's error text.
    Auth(String),
    /// Both `CLUSTER SHARDS` and `CLUSTER SLOTS` were answered with an error (for instance
    /// "ERR This instance has cluster support disabled"); carries both texts.
    Refused(String),
    /// The bytes were not valid RESP, or the reply was far too large.
    Protocol(String),
    /// The reply was valid RESP but not a topology reply.
    Malformed(String),
    /// The node answered, but knows of no slot with a live owner (a node not yet joined to a
    /// cluster, or a cluster still being created).
    NoSlots,
}

impl fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedFailure::Connect(e) => write!(f, "cannot connect: {e}"),
            SeedFailure::Timeout(what) => write!(f, "timed out waiting for {what}"),
            SeedFailure::Io(e) => write!(f, "connection failed: {e}"),
            SeedFailure::Auth(e) => write!(f, "authentication refused: {e}"),
            SeedFailure::Refused(e) => write!(f, "topology commands refused: {e}"),
            SeedFailure::Protocol(e) => write!(f, "invalid reply: {e}"),
            SeedFailure::Malformed(e) => write!(f, "unexpected reply: {e}"),
            SeedFailure::NoSlots => f.write_str("the node knows no slot with a live owner"),
        }
    }
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::NoSeeds => f.write_str("no cluster seed node is configured"),
            TopologyError::Malformed(e) => write!(f, "malformed cluster topology: {e}"),
            TopologyError::AllSeedsFailed(failures) => {
                f.write_str("no cluster seed node gave a slot map: ")?;
                for (i, (seed, cause)) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{seed}: {cause}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TopologyError {}

pub(super) fn malformed(msg: String) -> TopologyError {
    TopologyError::Malformed(msg)
}

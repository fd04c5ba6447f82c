//! The wire: reading client requests, framing upstream replies, building replies keyward makes.

pub mod args;
pub mod reply;
pub mod request;
pub mod write;

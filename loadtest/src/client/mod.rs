//! The socket side of the load tester.
//!
//! | module | owns |
//! |---|---|
//! | [`dial`] | opening one socket: source address, TCP, handshake, the protocol's greeting |
//! | [`session`] | one open socket: read, account, answer pings, close |
//! | [`fleet`] | one process's sockets: pacing, holding or churning, the outcome |
//! | [`resume`] | a resuming socket (soak, storm): one offset ledger across its sessions, `since` on each reconnect |
//! | [`lifetime`] | how long a churning socket lives |
//! | [`counters`] | live counters for the progress line and worker reports |

pub mod counters;
pub mod dial;
pub mod fleet;
pub mod lifetime;
pub mod resume;
pub mod session;

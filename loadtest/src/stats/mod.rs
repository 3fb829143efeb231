//! The load tester's own statistics, free of I/O so they can be tested on
//! known inputs:
//!
//! | module | owns |
//! |---|---|
//! | [`seen`] | duplicate detection per socket (a sliding window of sequence numbers) |
//! | [`tally`] | one session's account while it receives; its [`tally::SessionRecord`] |
//! | [`delivery`] | the publish log, expected vs received: loss, surplus, duplicates, misrouted |
//! | [`offsets`] | durable rooms: each socket's offsets per room across sessions; lost, duplicated, out of order |
//! | [`latency`] | HdrHistogram latencies, percentiles, merge and transport |
//! | [`outcome`] | one process's totals and the merge of worker processes |

pub mod delivery;
pub mod latency;
pub mod offsets;
pub mod outcome;
pub mod seen;
pub mod tally;

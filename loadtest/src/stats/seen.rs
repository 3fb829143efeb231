//! Which sequence numbers one socket has already received: a sliding window
//! of the last [`WINDOW`] numbers below the highest one seen, as in IPsec's
//! anti-replay check. Events of one publisher to one room arrive in order,
//! so a number at or below the top is either a duplicate or a reordering;
//! the window tells them apart in constant memory per socket.

/// How far below the highest number a duplicate can still be recognised.
pub const WINDOW: u64 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time, in order.
    New,
    /// First time, but after a higher number: delivered out of order.
    Reordered,
    /// Received before.
    Duplicate,
    /// So far below the top that the window no longer knows it.
    TooOld,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SeenWindow {
    top: Option<u64>,
    /// Bit `i` set: `top - i` was received.
    bits: u128,
}

impl SeenWindow {
    pub fn observe(&mut self, seq: u64) -> Seen {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.bits = 1;
            return Seen::New;
        };
        if seq > top {
            let shift = seq - top;
            self.bits = if shift >= WINDOW { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = Some(seq);
            return Seen::New;
        }
        let back = top - seq;
        if back >= WINDOW {
            return Seen::TooOld;
        }
        let bit = 1u128 << back;
        if self.bits & bit != 0 {
            Seen::Duplicate
        } else {
            self.bits |= bit;
            Seen::Reordered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_numbers_are_new_and_repeats_are_duplicates() {
        let mut w = SeenWindow::default();
        for seq in 0..1000 {
            assert_eq!(w.observe(seq), Seen::New);
        }
        assert_eq!(w.observe(999), Seen::Duplicate);
        assert_eq!(w.observe(900), Seen::Duplicate);
        assert_eq!(w.observe(999 - WINDOW), Seen::TooOld);
    }

    #[test]
    fn gaps_then_late_arrivals_are_reordered_once_then_duplicates() {
        let mut w = SeenWindow::default();
        assert_eq!(w.observe(10), Seen::New);
        assert_eq!(w.observe(14), Seen::New);
        assert_eq!(w.observe(12), Seen::Reordered);
        assert_eq!(w.observe(12), Seen::Duplicate);
        assert_eq!(w.observe(11), Seen::Reordered);
        assert_eq!(w.observe(10), Seen::Duplicate);
    }

    #[test]
    fn a_jump_beyond_the_window_forgets_everything_below() {
        let mut w = SeenWindow::default();
        assert_eq!(w.observe(5), Seen::New);
        assert_eq!(w.observe(5 + 1000), Seen::New);
        assert_eq!(w.observe(5 + 1000), Seen::Duplicate);
        assert_eq!(w.observe(5), Seen::TooOld);
        // Sparse but increasing numbers (one user's share of the events).
        assert_eq!(w.observe(5 + 1000 + 127), Seen::New);
        assert_eq!(w.observe(5 + 1000), Seen::Duplicate);
    }
}

//! A consumer's in-flight window in bytes. The broker bounds what a consumer holds unacked
//! by count (the prefetch); the gateway wants it bounded by bytes, so that memory does not
//! grow with platforms × message size. Each consumer gets a share of
//! `gateway.in_flight_bytes` and subscribes with the prefetch that share holds at the body
//! sizes it has seen, never more than its configured `prefetch`. A per-consumer prefetch
//! applies only to a new subscription (changing it on a running one needs global QoS,
//! which quorum queues refuse), so when the sizes move the derived prefetch far enough, the
//! consumer resubscribes on a fresh channel and the old one is wound down as on a pause:
//! what it had taken is processed and acked on it before it closes.

/// Before any body is seen, a consumer assumes bodies this large a fraction of its share:
/// the first subscription stays within the share even if the first bodies are large, and
/// small bodies widen the window after one round of [`ROUND`] deliveries.
const FIRST_PREFETCH: usize = 8;

/// What a delivery in flight costs beyond its body: lapin's record of it with its
/// properties, and above all the state of its processing (the pipeline's future, about
/// 4 KiB; docs/performance.md, "Memory"). Counting it keeps the share a bound on the memory
/// of what is in flight, not only on its bodies, and tiny bodies from making the window
/// unbounded in count.
const PER_MESSAGE: usize = 6 * 1024;

/// The size estimate is the largest delivery of this round and the last one: it rises with
/// a larger body at once, and falls only when two rounds of this many deliveries were
/// smaller.
const ROUND: u32 = 32;

/// The window follows the derived prefetch only when it moved by more than a quarter:
/// every change costs a resubscription.
const SLACK_NUM: usize = 5;
const SLACK_DEN: usize = 4;

#[derive(Debug, Clone)]
pub struct Window {
    /// This consumer's share of `gateway.in_flight_bytes`.
    share: usize,
    /// The configured prefetch: the window never asks for more.
    most: u16,
    /// The largest delivery of the last round and of this one, overhead included: a high
    /// estimate of the size of the deliveries to come.
    last_round: usize,
    this_round: usize,
    /// Deliveries seen in this round.
    seen: u32,
}

impl Window {
    pub fn new(share: usize, most: u16) -> Window {
        Window {
            share,
            most: most.max(1),
            last_round: (share / FIRST_PREFETCH).max(PER_MESSAGE),
            this_round: 0,
            seen: 0,
        }
    }

    fn size(&self) -> usize {
        self.last_round.max(self.this_round).max(1)
    }

    /// The prefetch to subscribe with: as many deliveries of the estimated size as the
    /// share holds, at least one, at most the configured prefetch.
    pub fn prefetch(&self) -> u16 {
        let fits = self.share / self.size();
        u16::try_from(fits).unwrap_or(u16::MAX).clamp(1, self.most)
    }

    /// Takes note of a delivery's body size.
    pub fn saw(&mut self, body: usize) {
        self.this_round = self.this_round.max(body.saturating_add(PER_MESSAGE));
        self.seen += 1;
        if self.seen == ROUND {
            self.last_round = self.this_round;
            self.this_round = 0;
            self.seen = 0;
        }
    }

    /// Whether a subscription made with `current` should make way for one with
    /// [`Window::prefetch`].
    pub fn moved(&self, current: u16) -> bool {
        let wanted = usize::from(self.prefetch());
        let current = usize::from(current);
        wanted * SLACK_NUM < current * SLACK_DEN || wanted * SLACK_DEN > current * SLACK_NUM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn the_window_holds_the_share_at_the_sizes_seen() {
        let mut w = Window::new(MIB, 256);
        assert_eq!(
            w.prefetch(),
            8,
            "before any body: a few, whatever their size"
        );
        for _ in 0..ROUND - 1 {
            w.saw(4096);
        }
        assert_eq!(w.prefetch(), 8, "until a round is complete");
        w.saw(4096);
        assert_eq!(
            w.prefetch(),
            102,
            "small bodies: as many as the share holds, 10 KiB each with the overhead"
        );
        assert!(w.moved(8));
        w.saw(256 * 1024);
        assert_eq!(w.prefetch(), 3, "one large body narrows it at once");
        assert!(w.moved(102));
        assert!(!w.moved(3));
        for _ in 0..ROUND {
            w.saw(4096);
        }
        assert_eq!(w.prefetch(), 3, "and keeps it narrow for a round after");
        w.saw(64 * MIB);
        assert_eq!(w.prefetch(), 1, "never less than one");
    }

    #[test]
    fn what_a_delivery_is_counted_for_covers_the_state_of_its_processing() {
        let state = crate::pipeline::state_per_submission();
        println!("state of one submission in flight: {state} bytes");
        assert!(
            state <= PER_MESSAGE,
            "a submission in flight keeps {state} bytes besides its body, the window counts {PER_MESSAGE}"
        );
    }

    #[test]
    fn the_configured_prefetch_is_the_most_it_asks_for() {
        let mut w = Window::new(64 * MIB, 100);
        for _ in 0..300 {
            w.saw(10);
        }
        assert_eq!(w.prefetch(), 100);
        assert!(!w.moved(100));
        assert!(!w.moved(90), "small moves are not worth a resubscription");
    }
}

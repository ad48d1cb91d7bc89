//! Returned messages on a pipelined channel, matched to their publishes by message id.
//!
//! lapin hands the oldest returned message it holds to whichever delivery tag it completes
//! next, and completes the tags of one `multiple` ack in no fixed order. On a channel that
//! carries many publishes at once, the return of an unroutable message can therefore come
//! back with another publish's confirm: that publish would be failed for nothing, and the
//! unroutable one counted as delivered although the broker dropped it.
//!
//! So on such a channel every return is filed under its own message id, whoever received
//! it, and a publish concludes only when it knows whether its own message came back:
//! - its id is in the book: returned;
//! - otherwise, once every publish that was in flight on the channel when it was answered
//!   has been answered too and has filed what it received. The broker sends a message's
//!   return before its confirm, and lapin hands each return out at the latest with the
//!   last of the confirms in flight at that moment, so by then its return, had there been
//!   one, is in the book.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lapin::message::BasicReturnMessage;

/// The broker's reason for a returned message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    pub code: u16,
    pub text: String,
}

/// A returned message as the book files it: whose it is (its message id, when it has one)
/// and why it came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub message_id: Option<String>,
    pub returned: Returned,
}

impl From<&BasicReturnMessage> for Carried {
    fn from(message: &BasicReturnMessage) -> Carried {
        Carried {
            message_id: message
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            returned: Returned {
                code: message.reply_code,
                text: message.reply_text.to_string(),
            },
        }
    }
}

/// One channel's publishes in flight and the returns not yet claimed.
#[derive(Default)]
pub struct ReturnBook {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    next: u64,
    in_flight: BTreeSet<u64>,
    returned: HashMap<String, Returned>,
}

/// A publish's place in its channel's book, from before it is sent until it is answered.
/// Dropped unanswered (the publish was abandoned), it leaves the book, so that nobody waits
/// for it.
pub struct Entry {
    book: Arc<ReturnBook>,
    seq: u64,
    open: bool,
}

/// What a publish must wait for once it has been answered (see [`Entry::answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Publishes entered before this one was answered.
    before: u64,
}

impl State {
    /// Takes `seq` out of the publishes in flight; whether it was the oldest of them.
    fn leave(&mut self, seq: u64) -> bool {
        let oldest = self.in_flight.first() == Some(&seq);
        self.in_flight.remove(&seq);
        oldest
    }
}

impl ReturnBook {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step: a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters a publish about to be sent.
    pub fn enter(self: &Arc<Self>) -> Entry {
        let mut state = self.lock();
        let seq = state.next;
        state.next += 1;
        state.in_flight.insert(seq);
        Entry {
            book: self.clone(),
            seq,
            open: true,
        }
    }

    /// Whether the message `own_id` came back: waits until its return is in the book or
    /// every publish entered before `answered` has been answered.
    pub async fn own_return(&self, answered: Answered, own_id: &str) -> Option<Returned> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so that an answer in between is not missed.
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(returned) = state.returned.remove(own_id) {
                    return Some(returned);
                }
                let waiting_on_earlier = state
                    .in_flight
                    .first()
                    .is_some_and(|&seq| seq < answered.before);
                if !waiting_on_earlier {
                    return None;
                }
            }
            changed.await;
        }
    }

    /// Drops what is filed for `own_id` (a publish that gave up on its confirm).
    pub fn forget(&self, own_id: &str) {
        self.lock().returned.remove(own_id);
    }
}

impl Entry {
    /// The publish was answered (or will never be: its confirm failed); `carried` is the
    /// returned message lapin gave with the answer, whoever's it is. A return without a
    /// message id cannot be matched: it is filed under `own_id`, as lapin gave it.
    pub fn answered(mut self, own_id: &str, carried: Option<Carried>) -> Answered {
        self.open = false;
        let mut state = self.book.lock();
        let filed = carried.is_some();
        if let Some(carried) = carried {
            let id = carried.message_id.unwrap_or_else(|| own_id.to_owned());
            state.returned.insert(id, carried.returned);
        }
        let oldest = state.leave(self.seq);
        let before = state.next;
        drop(state);
        // A waiter concludes on its own return or on the oldest publish in flight moving
        // past it: nothing else can change its answer, so nothing else wakes the waiters
        // (under load most answers are for a publish that is not the oldest).
        if filed || oldest {
            self.book.changed.notify_waiters();
        }
        Answered { before }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.open {
            let oldest = self.book.lock().leave(self.seq);
            if oldest {
                self.book.changed.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returned(id: Option<&str>) -> Carried {
        Carried {
            message_id: id.map(str::to_owned),
            returned: Returned {
                code: 312,
                text: "NO_ROUTE".to_owned(),
            },
        }
    }

    #[tokio::test]
    async fn a_return_handed_to_another_publish_reaches_its_own() {
        let book = Arc::new(ReturnBook::default());
        let healthy = book.enter();
        let unroutable = book.enter();
        // lapin gives the unroutable message's return with the healthy one's confirm.
        let a = healthy.answered("healthy", Some(returned(Some("unroutable"))));
        let b = unroutable.answered("unroutable", None);
        assert_eq!(book.own_return(a, "healthy").await, None);
        assert_eq!(
            book.own_return(b, "unroutable").await,
            Some(Returned {
                code: 312,
                text: "NO_ROUTE".to_owned()
            })
        );
    }

    #[tokio::test]
    async fn a_publish_answered_first_waits_for_the_earlier_ones_in_flight() {
        let book = Arc::new(ReturnBook::default());
        let carrier = book.enter();
        let owner = book.enter();
        // The owner is answered first (no return with its confirm); the carrier, entered
        // before it and still in flight, brings the owner's return a moment later.
        let answered = owner.answered("owner", None);
        let waiting = {
            let book = book.clone();
            tokio::spawn(async move { book.own_return(answered, "owner").await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "concluded before the carrier answered"
        );
        carrier.answered("carrier", Some(returned(Some("owner"))));
        assert_eq!(waiting.await.unwrap().map(|r| r.code), Some(312));
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_oldest_publish_leaves_or_its_return_is_filed() {
        let book = Arc::new(ReturnBook::default());
        let oldest = book.enter();
        let middle = book.enter();
        let carrier = book.enter();
        let owner = book.enter();
        let spawn_wait = |answered: Answered, id: &'static str| {
            let book = book.clone();
            tokio::spawn(async move { book.own_return(answered, id).await })
        };
        let waiting = spawn_wait(owner.answered("owner", None), "owner");
        tokio::task::yield_now().await;
        // Not the oldest and no return: no reason to conclude yet.
        let middle_answer = middle.answered("middle", None);
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "concluded with the oldest in flight"
        );
        // Not the oldest either, but it files the owner's return.
        carrier.answered("carrier", Some(returned(Some("owner"))));
        assert_eq!(waiting.await.unwrap().map(|r| r.code), Some(312));
        // A waiter with no return concludes when the oldest leaves, dropped unanswered.
        let waiting = spawn_wait(middle_answer, "middle");
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "concluded with the oldest in flight"
        );
        drop(oldest);
        assert_eq!(waiting.await.unwrap(), None);
    }

    #[tokio::test]
    async fn later_publishes_do_not_hold_an_answer_back() {
        let book = Arc::new(ReturnBook::default());
        let first = book.enter();
        let answered = first.answered("first", None);
        let _later = book.enter();
        assert_eq!(book.own_return(answered, "first").await, None);
    }

    #[tokio::test]
    async fn a_return_without_message_id_stays_with_who_got_it() {
        let book = Arc::new(ReturnBook::default());
        let only = book.enter();
        let answered = only.answered("only", Some(returned(None)));
        assert!(book.own_return(answered, "only").await.is_some());
    }
}

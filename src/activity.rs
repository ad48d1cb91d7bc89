//! What the gateway is doing, for operators: counters and rates per platform and
//! destination, the live stream of routing outcomes, each submission's trace, and the
//! pause switch of every platform's ingress.
//!
//! Prometheus metrics ([`crate::telemetry::Metrics`]) are for dashboards and alerts and
//! keep no per-submission detail; this is what the admin API shows. The pipeline reports
//! here once per outcome; nothing here blocks a submission except the trace recorder's
//! back-pressure when the store falls far behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::outcome::Ending;
use crate::store::{EventRecorder, TraceEvent};

/// How often the moving averages are updated.
const RATE_TICK: Duration = Duration::from_secs(5);
/// Routing events a slow watcher may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

/// Events per second over 1, 5 and 15 minutes, updated like Unix load averages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub m1: f64,
    pub m5: f64,
    pub m15: f64,
}

/// A counter with its moving averages.
#[derive(Debug, Default)]
pub struct RatedCounter {
    total: AtomicU64,
    rates: Mutex<(u64, Rates)>,
}

impl RatedCounter {
    pub fn inc(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn rates(&self) -> Rates {
        self.rates.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    /// Folds the events since the last tick, `elapsed` ago, into the averages.
    fn tick(&self, elapsed: Duration) {
        let total = self.get();
        let mut guard = self.rates.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, rates) = &mut *guard;
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let rate = total.saturating_sub(*last) as f64 / seconds;
        *last = total;
        let fold = |average: f64, window: f64| {
            let alpha = 1.0 - (-seconds / window).exp();
            average + alpha * (rate - average)
        };
        rates.m1 = fold(rates.m1, 60.0);
        rates.m5 = fold(rates.m5, 300.0);
        rates.m15 = fold(rates.m15, 900.0);
    }
}

/// State of a platform's consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerState {
    /// Waiting for its broker, or resubscribing after a loss.
    Connecting = 0,
    Consuming = 1,
    /// Paused by an operator.
    Paused = 2,
}

impl ConsumerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerState::Connecting => "connecting",
            ConsumerState::Consuming => "consuming",
            ConsumerState::Paused => "paused",
        }
    }
}

/// A queue's depth as its broker last counted it (`crate::backlog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages waiting, not yet delivered to any consumer.
    pub ready: u64,
    pub consumers: u32,
    pub counted_at: SystemTime,
}

#[derive(Debug)]
pub struct PlatformActivity {
    pub consumed: RatedCounter,
    pub forwarded: AtomicU64,
    pub rejected: AtomicU64,
    pub in_flight: AtomicU64,
    state: AtomicU8,
    /// An operator's pause: the consumer loop watches it.
    paused: watch::Sender<bool>,
    /// The ingress queue's depth; `None` while its broker has not answered.
    queue: Mutex<Option<QueueDepth>>,
}

impl PlatformActivity {
    fn new() -> PlatformActivity {
        PlatformActivity {
            consumed: RatedCounter::default(),
            forwarded: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            state: AtomicU8::new(ConsumerState::Connecting as u8),
            paused: watch::channel(false).0,
            queue: Mutex::new(None),
        }
    }

    pub fn queue(&self) -> Option<QueueDepth> {
        *self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ingress queue's depth as counted now, or `None` when it could not be.
    pub fn set_queue(&self, depth: Option<QueueDepth>) {
        *self.queue.lock().unwrap_or_else(PoisonError::into_inner) = depth;
    }

    pub fn state(&self) -> ConsumerState {
        match self.state.load(Ordering::Relaxed) {
            1 => ConsumerState::Consuming,
            2 => ConsumerState::Paused,
            _ => ConsumerState::Connecting,
        }
    }

    pub fn set_state(&self, state: ConsumerState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns whether this changed anything.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.send_if_modified(|p| {
            let changed = *p != paused;
            *p = paused;
            changed
        })
    }

    pub fn watch_paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }
}

#[derive(Debug, Default)]
pub struct DestinationActivity {
    pub delivered: RatedCounter,
    pub failed: AtomicU64,
    /// Retries scheduled by this instance and not yet back.
    pub retrying: AtomicU64,
    last_error: Mutex<Option<(String, SystemTime)>>,
}

impl DestinationActivity {
    pub fn last_error(&self) -> Option<(String, SystemTime)> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failed_with(&self, error: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((error.to_owned(), SystemTime::now()));
    }
}

/// One routing outcome, as the admin API's live tail shows it. Metadata only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingEvent {
    pub at: SystemTime,
    pub submission_id: String,
    pub platform: String,
    pub destination: String,
    /// delivered, duplicate, retrying, requeued, dead-lettered.
    pub outcome: String,
    pub reason: String,
}

/// An outcome for the live watchers, borrowed: the [`RoutingEvent`] is built from it only
/// when somebody watches.
struct Told<'a> {
    /// `None` for a platform no longer configured.
    platform: Option<usize>,
    submission_id: &'a str,
    destination: &'a str,
    outcome: Ending,
    reason: &'a str,
}

pub struct Activity {
    pub started: SystemTime,
    /// Same index as `config.platforms`.
    platforms: Vec<(String, PlatformActivity)>,
    /// By destination id: destinations come and go through the admin API.
    destinations: Mutex<HashMap<String, Arc<DestinationActivity>>>,
    pub consumed: RatedCounter,
    pub rejected: RatedCounter,
    events: broadcast::Sender<RoutingEvent>,
    trace: Option<EventRecorder>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("started", &self.started)
            .field("platforms", &self.platforms.len())
            .finish_non_exhaustive()
    }
}

impl Activity {
    /// `trace`: where submission traces go; `None` keeps none (tests of other parts).
    pub fn new(config: &Config, trace: Option<EventRecorder>) -> Activity {
        Activity {
            started: SystemTime::now(),
            platforms: config
                .platforms
                .iter()
                .map(|p| (p.id.clone(), PlatformActivity::new()))
                .collect(),
            destinations: Mutex::default(),
            consumed: RatedCounter::default(),
            rejected: RatedCounter::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            trace,
        }
    }

    pub fn platform(&self, index: usize) -> &PlatformActivity {
        &self.platforms[index].1
    }

    pub fn platform_by_id(&self, id: &str) -> Option<&PlatformActivity> {
        self.platforms
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, activity)| activity)
    }

    pub fn platforms(&self) -> impl Iterator<Item = (&str, &PlatformActivity)> {
        self.platforms.iter().map(|(id, a)| (id.as_str(), a))
    }

    pub fn destination(&self, id: &str) -> Arc<DestinationActivity> {
        let mut destinations = self
            .destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Called once per submission: the id is copied only the first time it is seen.
        if let Some(found) = destinations.get(id) {
            return found.clone();
        }
        destinations.entry(id.to_owned()).or_default().clone()
    }

    /// Every destination seen so far with its activity.
    pub fn destinations(&self) -> Vec<(String, Arc<DestinationActivity>)> {
        self.destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, activity)| (id.clone(), activity.clone()))
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RoutingEvent> {
        self.events.subscribe()
    }

    /// A submission was taken off a platform's queue.
    pub fn consumed(&self, platform: usize) {
        let p = self.platform(platform);
        p.consumed.inc();
        p.in_flight.fetch_add(1, Ordering::Relaxed);
        self.consumed.inc();
    }

    /// A submission taken off a platform's queue is settled.
    pub fn settled(&self, platform: usize) {
        let _ = self.platform(platform).in_flight.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |n| n.checked_sub(1),
        );
    }

    /// Counts an outcome and tells the live watchers. `platform` is `None` for a retry or
    /// replay of a platform no longer configured.
    pub fn outcome(
        &self,
        platform: Option<usize>,
        submission_id: &str,
        destination: &str,
        outcome: Ending,
        reason: &str,
        error: &str,
    ) {
        let platform_activity = platform.map(|i| self.platform(i));
        match outcome {
            Ending::Delivered => {
                self.delivered(
                    platform,
                    submission_id,
                    destination,
                    &self.destination(destination),
                );
                return;
            }
            Ending::DeadLettered => {
                if let Some(p) = platform_activity {
                    p.rejected.fetch_add(1, Ordering::Relaxed);
                }
                self.rejected.inc();
                if !destination.is_empty() {
                    self.destination(destination).failed_with(error);
                }
            }
            Ending::Retrying => {
                let d = self.destination(destination);
                d.failed_with(error);
                d.retrying.fetch_add(1, Ordering::Relaxed);
            }
            Ending::Duplicate | Ending::Requeued => {}
        }
        self.tell(Told {
            platform,
            submission_id,
            destination,
            outcome,
            reason,
        });
    }

    /// [`outcome`](Self::outcome) "delivered", with the destination's activity already at
    /// hand (the pipeline keeps it per destination): the common case looks nothing up.
    pub fn delivered(
        &self,
        platform: Option<usize>,
        submission_id: &str,
        destination: &str,
        activity: &DestinationActivity,
    ) {
        if let Some(p) = platform.map(|i| self.platform(i)) {
            p.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        activity.delivered.inc();
        self.tell(Told {
            platform,
            submission_id,
            destination,
            outcome: Ending::Delivered,
            reason: "",
        });
    }

    /// Tells the live watchers of an outcome.
    fn tell(&self, told: Told<'_>) {
        // Nobody watching is the normal case: then the event is not even built.
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(RoutingEvent {
            at: SystemTime::now(),
            submission_id: told.submission_id.to_owned(),
            platform: told
                .platform
                .map(|i| self.platforms[i].0.clone())
                .unwrap_or_default(),
            destination: told.destination.to_owned(),
            outcome: told.outcome.as_str().to_owned(),
            reason: told.reason.to_owned(),
        });
    }

    /// A retry for `destination` came back from the delay queue.
    pub fn retry_returned(&self, destination: &str) {
        if destination.is_empty() {
            return;
        }
        let _ = self.destination(destination).retrying.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |n| n.checked_sub(1),
        );
    }

    /// Adds to the submission's trace. Events without a submission id are not kept: there
    /// is nothing to look them up by.
    pub async fn trace(&self, event: TraceEvent) {
        if let Some(recorder) = &self.trace
            && !event.submission_id.is_empty()
        {
            recorder.record(event).await;
        }
    }

    /// Updates the moving averages every [`RATE_TICK`] until `stop`.
    pub async fn tick_rates(self: Arc<Self>, stop: CancellationToken) {
        let mut interval = tokio::time::interval(RATE_TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = tokio::time::Instant::now();
            let elapsed = now - last;
            last = now;
            self.consumed.tick(elapsed);
            self.rejected.tick(elapsed);
            for (_, p) in &self.platforms {
                p.consumed.tick(elapsed);
            }
            let destinations: Vec<Arc<DestinationActivity>> = self
                .destinations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            for d in destinations {
                d.delivered.tick(elapsed);
            }
        }
    }

    /// Writes the trace events queued so far; the last call before the store closes.
    pub async fn flush(&self) {
        if let Some(recorder) = &self.trace {
            recorder.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_is_approached_by_every_average() {
        let counter = RatedCounter::default();
        // 100 events per 5 s = 20/s, for two hours (eight 15-minute windows).
        for _ in 0..1440 {
            for _ in 0..100 {
                counter.inc();
            }
            counter.tick(Duration::from_secs(5));
        }
        let r = counter.rates();
        for (name, value) in [("m1", r.m1), ("m5", r.m5), ("m15", r.m15)] {
            assert!((value - 20.0).abs() < 0.5, "{name} = {value}");
        }
        // Then silence for a minute: the 1-minute average falls fastest.
        for _ in 0..12 {
            counter.tick(Duration::from_secs(5));
        }
        let r = counter.rates();
        assert!(r.m1 < 8.0, "{r:?}");
        assert!(r.m1 < r.m5 && r.m5 < r.m15, "{r:?}");
    }
}

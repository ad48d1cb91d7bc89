//! The routing directory in use: swapped whole when operators change it or the
//! configuration file is reloaded; submissions in flight keep the one they started with.

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::ExchangeKind;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::{Live, Outlet, OutletParts, Pipeline};
use crate::amqp::link::Link;
use crate::config::Config;
use crate::model::{BrokerIndex, Destination};
use crate::routing::live::Snapshot;

impl Pipeline {
    /// Puts a new routing directory in use. Destinations that stay keep their publisher
    /// (and its open channel); submissions in flight finish on the directory they started
    /// with.
    pub fn install(&self, snapshot: Snapshot) {
        let live = Live::new(
            snapshot,
            Some(&self.live.load()),
            &OutletParts {
                links: &self.publish_links,
                shared: &self.shared,
                confirm_timeout: self.config.gateway.confirm_timeout,
                metrics: &self.metrics,
                activity: &self.activity,
                platforms: self.config.platforms.len(),
            },
        );
        let live = Arc::new(live);
        check_exchanges(
            &live,
            &self.publish_links,
            self.config.gateway.confirm_timeout,
        );
        self.live.store(live);
        self.directory_changes.send_replace(());
    }

    /// [`install`](Self::install) unless the directory in use is at `snapshot`'s version or
    /// a later one; returns whether it was installed. The admin API and the poll for other
    /// instances' changes both install: without this, a poll that read the store just
    /// before a local change could put the older directory back.
    ///
    /// After a reload of the configuration file, a snapshot built on the file entries of
    /// before (a change through the admin API that raced the reload) is built again on the
    /// reloaded ones: a reload is never undone by a change that did not know of it.
    pub fn install_newer(&self, snapshot: Snapshot) -> bool {
        let _one_at_a_time = self
            .installing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.version <= self.snapshot().version {
            return false;
        }
        let directory_config = self.directory_config.load_full();
        if Arc::ptr_eq(&directory_config, &self.config) {
            self.install(snapshot);
        } else {
            let (snapshot, problems) = snapshot.rebuild(&directory_config);
            for (key, message) in problems {
                tracing::error!(entry = %key, problem = %message,
                    "stored routing directory entry left out");
            }
            self.install(snapshot);
        }
        true
    }

    /// The configuration the routing directory's file entries come from: the one the
    /// gateway started with, or the configuration file reloaded last. Build directories
    /// to install on this one.
    pub fn directory_config(&self) -> Arc<Config> {
        self.directory_config.load_full()
    }

    /// Puts the file entries of `config` in use, with the stored entries of the directory
    /// in use: a reloaded configuration file's destinations, routes and services. Returns
    /// the stored entries that no longer fit and were left out.
    pub fn reload_file(&self, config: Config) -> Vec<crate::routing::live::Problem> {
        let _one_at_a_time = self
            .installing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let config = Arc::new(config);
        let (snapshot, problems) = self.snapshot().rebuild(&config);
        self.directory_config.store(config);
        self.install(snapshot);
        problems
    }

    /// Changes with every directory put in use.
    pub fn watch_directory(&self) -> tokio::sync::watch::Receiver<()> {
        self.directory_changes.subscribe()
    }
}

/// Checks every destination's exchange passively, in the background, one broker after the
/// other: a missing one is logged and its destination publishes on a channel of its own
/// (see [`Outlet`]) before its first submission could close the channel the others share.
pub(super) fn check_exchanges(
    live: &Arc<Live>,
    links: &HashMap<BrokerIndex, Arc<Link>>,
    timeout: Duration,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let live = live.clone();
    let links: Vec<(BrokerIndex, Arc<Link>)> =
        links.iter().map(|(&b, link)| (b, link.clone())).collect();
    runtime.spawn(async move {
        for (broker, link) in links {
            check_broker(&live, broker, &link, timeout).await;
        }
    });
}

/// The passive checks of one broker's destinations, on one channel while they succeed (a
/// missing exchange closes it: the next check opens another). A broker that does not answer
/// is left for the publishes to find out about.
async fn check_broker(live: &Live, broker: BrokerIndex, link: &Link, timeout: Duration) {
    let mut channel = None;
    let on_broker = live.snapshot.destinations.iter().enumerate();
    for (i, d) in on_broker.filter(|(_, d)| d.broker == broker && !d.exchange.is_empty()) {
        if channel.is_none() {
            match tokio::time::timeout(timeout, link.open_channel(&CancellationToken::new())).await
            {
                Ok(Ok(opened)) => channel = Some(opened),
                Ok(Err(e)) => {
                    tracing::debug!(broker = %link.broker(), error = %e, "destination exchanges not checked");
                    return;
                }
                Err(_) => return,
            }
        }
        let Some((_connection, open)) = &channel else {
            return;
        };
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let declare = open.exchange_declare(
            d.exchange.as_str().into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        );
        match tokio::time::timeout(timeout, declare).await {
            Ok(Ok(())) => live.outlets[i].found(d),
            Ok(Err(e)) if is_not_found(&e) => {
                live.outlets[i].lost(d, "passive check");
                channel = None;
            }
            Ok(Err(e)) => {
                tracing::debug!(broker = %link.broker(), error = %e, "destination exchanges not checked");
                return;
            }
            Err(_) => return,
        }
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::NOTFOUND)))
}

impl Outlet {
    /// The destination's exchange is missing: from now on its publishes go through its own
    /// publisher, until one is confirmed there.
    pub(super) fn lost(&self, d: &Destination, found_by: &str) {
        if !self.missing.swap(true, Ordering::AcqRel) {
            tracing::warn!(destination = %d.id, exchange = %d.exchange, found_by,
                "destination exchange missing; its submissions are retried until it exists");
        }
    }

    /// The destination's exchange is there (again): its publishes share the broker's
    /// confirm channel.
    pub(super) fn found(&self, d: &Destination) {
        if self.missing.swap(false, Ordering::AcqRel) {
            tracing::info!(destination = %d.id, exchange = %d.exchange,
                "destination exchange exists again");
        }
    }
}

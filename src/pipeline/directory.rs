//! The routing directory in use: swapped whole when operators change it or the
//! configuration file is reloaded; submissions in flight keep the one they started with.

use std::sync::Arc;

use super::{Live, OutletParts, Pipeline};
use crate::config::Config;
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
                confirm_timeout: self.config.gateway.confirm_timeout,
                metrics: &self.metrics,
                activity: &self.activity,
                platforms: self.config.platforms.len(),
            },
        );
        self.live.store(Arc::new(live));
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

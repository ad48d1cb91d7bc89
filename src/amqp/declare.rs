//! `declare-topology`: every declaration of [`crate::topology`] on every broker of a
//! configuration, for local set-ups and tests. The gateway itself declares only what it
//! owns ([`super::OwnedTopology`]).

use std::time::Duration;

use crate::amqp::{self, ConnectError, Role};
use crate::config::Config;
use crate::topology::by_broker;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("broker {broker}: {what}: {source}")]
    Declare {
        broker: String,
        what: String,
        source: lapin::Error,
    },
    #[error("broker {broker}: the declarations did not finish within {}s", timeout.as_secs())]
    Timeout { broker: String, timeout: Duration },
}

/// Bound on one broker's declarations: a one-off command must end, and a connection that
/// dies under lapin can leave a request unanswered for ever. Hundreds of declarations take
/// well under a second on a healthy broker.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(60);

/// `declare-topology`: declares [`by_broker`] on every broker of the configuration, for
/// local set-ups and tests.
///
/// The brokers one after another would cost a round trip per declaration in sequence: with
/// 17 vhosts and ~400 destinations (the benchmark's topology) seconds instead of a few hundred
/// milliseconds. Each broker's declarations stay in order on its own channel.
pub async fn declare(config: &Config) -> Result<(), TopologyError> {
    let per_broker =
        config
            .brokers
            .iter()
            .zip(by_broker(config))
            .map(async |(broker, declarations)| {
                let failed = |what: String| {
                    let broker = broker.name.clone();
                    move |source| TopologyError::Declare {
                        broker,
                        what,
                        source,
                    }
                };
                let connection = amqp::connect_any(broker, Role::Publish).await?;
                let declared = async {
                    let channel = connection
                        .create_channel()
                        .await
                        .map_err(failed("open channel".into()))?;
                    declarations
                        .declare(&channel)
                        .await
                        .map_err(|e| failed(e.what)(e.source))
                };
                let declared = match tokio::time::timeout(DECLARE_TIMEOUT, declared).await {
                    Ok(declared) => declared,
                    Err(_) => Err(TopologyError::Timeout {
                        broker: broker.name.clone(),
                        timeout: DECLARE_TIMEOUT,
                    }),
                };
                amqp::close(&connection, "topology declared").await;
                declared
            });
    futures_util::future::try_join_all(per_broker)
        .await
        .map(|_| ())
}

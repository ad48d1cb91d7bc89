//! The settings sections: `[gateway]`, `[store]`, `[retry]`, `[telemetry]`, `[receipts]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Validator;
use crate::config::raw::{RawGateway, RawReceipts, RawRetry, RawStore, RawTelemetry};
use crate::config::*;
use crate::model::BrokerIndex;

impl Validator {
    /// `[gateway]`; `None` when its dead-letter broker is not one (reported).
    pub(super) fn gateway(
        &mut self,
        g: &RawGateway,
        broker_names: &HashMap<&str, BrokerIndex>,
    ) -> Option<GatewaySettings> {
        let dead_letter_broker = self.broker_ref(
            "gateway.dead_letter_broker",
            &g.dead_letter_broker,
            broker_names,
        );
        let max_message_bytes = g.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes == 0 || max_message_bytes > 512 * 1024 * 1024 {
            self.error(
                "gateway.max_message_bytes",
                format!("{max_message_bytes} is out of range (1 … 536870912)"),
            );
        }
        let in_flight_bytes = g.in_flight_bytes.unwrap_or(DEFAULT_IN_FLIGHT_BYTES);
        if !(64 * 1024..=64 * 1024 * 1024 * 1024).contains(&in_flight_bytes) {
            self.error(
                "gateway.in_flight_bytes",
                format!("{in_flight_bytes} is out of range (65536 … 68719476736)"),
            );
        }
        let confirm_timeout = g.confirm_timeout.unwrap_or(DEFAULT_CONFIRM_TIMEOUT);
        if confirm_timeout.is_zero() {
            self.error("gateway.confirm_timeout", "must be longer than zero");
        }
        let dead_letter_exchange = g
            .dead_letter_exchange
            .clone()
            .unwrap_or_else(|| DEFAULT_DEAD_LETTER_EXCHANGE.to_owned());
        if dead_letter_exchange.is_empty() {
            self.error("gateway.dead_letter_exchange", "must not be empty");
        }
        let dead_letter_queue = g
            .dead_letter_queue
            .clone()
            .unwrap_or_else(|| DEFAULT_DEAD_LETTER_QUEUE.to_owned());
        if dead_letter_queue.is_empty() {
            self.error("gateway.dead_letter_queue", "must not be empty");
        }
        Some(GatewaySettings {
            dead_letter_broker: dead_letter_broker?,
            dead_letter_exchange,
            dead_letter_queue,
            max_message_bytes: usize::try_from(max_message_bytes).unwrap_or(usize::MAX),
            in_flight_bytes: usize::try_from(in_flight_bytes).unwrap_or(usize::MAX),
            confirm_timeout,
            shutdown_grace: g.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            verify_attachment_hashes: g.verify_attachment_hashes.unwrap_or(true),
            store_dead_letters: g.store_dead_letters.unwrap_or(true),
        })
    }

    /// `[store]`; without a URL, SQLite in the data directory of `[gateway]`.
    pub(super) fn store(
        &mut self,
        raw: &RawStore,
        data_dir: Option<&PathBuf>,
        base: &Path,
    ) -> StoreSettings {
        let mut store_url = match &raw.url {
            Some(url) => url.clone(),
            None => {
                let dir = data_dir
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                format!("sqlite://{}", dir.join("ozg-gateway.db").display())
            }
        };
        if !(store_url.starts_with("sqlite:")
            || store_url.starts_with("postgres://")
            || store_url.starts_with("postgresql://"))
        {
            self.error(
                "store.url",
                "must start with sqlite: (embedded) or postgres:// (PostgreSQL)",
            );
        }
        self.store_password(&mut store_url, raw, base);
        let dedup_window = raw.dedup_window.unwrap_or(crate::store::DEFAULT_WINDOW);
        if dedup_window.is_zero() {
            self.error("store.dedup_window", "must be longer than zero");
        }
        let directory_poll = raw.directory_poll.unwrap_or(DEFAULT_DIRECTORY_POLL);
        if directory_poll < Duration::from_millis(100) {
            // Each poll is one query per instance: faster than this only loads the store.
            self.error("store.directory_poll", "must be at least 100ms");
        }
        StoreSettings {
            display: crate::store::redact_url(&store_url),
            url: store_url,
            dedup_window,
            trace_retention: raw.trace_retention.unwrap_or(DEFAULT_TRACE_RETENTION),
            dead_letter_retention: raw
                .dead_letter_retention
                .unwrap_or(DEFAULT_DEAD_LETTER_RETENTION),
            directory_poll,
        }
    }

    /// Puts the password of `store.password_file` or `store.password_env` into a postgres://
    /// URL, which must not have one of its own; warns about one written into the URL.
    fn store_password(&mut self, url: &mut String, raw: &RawStore, base: &Path) {
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let Ok(password) = self.password(
            "store.",
            raw.password_file.as_ref(),
            raw.password_env.as_ref(),
            base,
        ) else {
            return;
        };
        let key = if raw.password_file.is_some() {
            "store.password_file"
        } else {
            "store.password_env"
        };
        let parsed = url::Url::parse(url);
        let has_password = parsed.as_ref().is_ok_and(|u| u.password().is_some());
        match (password, parsed) {
            (Some(_), _) if !postgres => self.error(
                key,
                "needs a postgres:// store.url (the embedded SQLite store has no password)",
            ),
            (Some(_), Ok(_)) if has_password => self.error(
                "store.url",
                format!("has a password, and {key} gives one too: leave it out of the URL"),
            ),
            (Some(password), Ok(mut parsed)) => {
                if parsed.set_password(Some(password.expose())).is_ok() {
                    *url = parsed.to_string();
                } else {
                    self.error("store.url", "has no host to give the password for");
                }
            }
            (Some(_), Err(_)) => self.error("store.url", "is not a valid URL"),
            (None, _) if postgres && has_password => self.warn(
                "store.url",
                "holds the password; prefer store.password_file or store.password_env (the URL then has none)",
            ),
            (None, _) => {}
        }
    }

    /// `[retry]`.
    pub(super) fn retry(&mut self, raw: &RawRetry) -> RetrySettings {
        let delays = raw
            .delays
            .as_ref()
            .map(|ds| ds.iter().map(|d| d.into_inner()).collect())
            .unwrap_or_else(default_retry_delays);
        if delays.is_empty() || delays.len() > 20 {
            self.error("retry.delays", "must list 1 to 20 durations");
        }
        if delays
            .iter()
            .any(|d| d.as_millis() == 0 || d.as_secs() > 24 * 3600)
        {
            self.error("retry.delays", "each delay must be between 1 ms and 24 h");
        }
        let max_attempts = raw.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 {
            self.error("retry.max_attempts", "must be at least 1 (1 = never retry)");
        }
        let retry_prefetch = raw.prefetch.unwrap_or(DEFAULT_PREFETCH);
        if retry_prefetch == 0 || retry_prefetch > u32::from(u16::MAX) {
            self.error(
                "retry.prefetch",
                format!("{retry_prefetch} is out of range (1 … 65535)"),
            );
        }
        RetrySettings {
            delays,
            max_attempts,
            max_age: raw.max_age.unwrap_or(DEFAULT_RETRY_MAX_AGE),
            prefetch: u16::try_from(retry_prefetch).unwrap_or(u16::MAX),
        }
    }

    /// `[telemetry]`.
    pub(super) fn telemetry(&mut self, t: &RawTelemetry) -> TelemetrySettings {
        let defaults = TelemetrySettings::default();
        let otlp_protocol = match t.otlp_protocol.as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => {
                self.error(
                    "telemetry.otlp_protocol",
                    format!("unknown protocol {other:?} (grpc or http/protobuf)"),
                );
                OtlpProtocol::Grpc
            }
        };
        if let Some(endpoint) = &t.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            self.error(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            );
        }
        let sampling_ratio = t.sampling_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sampling_ratio) {
            self.error(
                "telemetry.sampling_ratio",
                format!("{sampling_ratio} is not between 0 and 1"),
            );
        }
        let metrics_address = match &t.metrics_address {
            None => None,
            Some(a) => match a.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        "telemetry.metrics_address",
                        format!("{a:?} is not an address like 127.0.0.1:9464"),
                    );
                    None
                }
            },
        };
        let backlog_interval = t.backlog_interval.unwrap_or(defaults.backlog_interval);
        if backlog_interval.is_zero() {
            self.error("telemetry.backlog_interval", "must be longer than zero");
        }
        let log_level = t.log_level.clone().unwrap_or(defaults.log_level);
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            self.error(
                "telemetry.log_level",
                format!("{log_level:?} is not a log filter (e.g. info, or info,lapin=off)"),
            );
        }
        let log_format = match t.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.error(
                    "telemetry.log_format",
                    format!("unknown format {other:?} (text or json)"),
                );
                LogFormat::Text
            }
        };
        TelemetrySettings {
            otlp_endpoint: t.otlp_endpoint.clone(),
            otlp_protocol,
            sampling_ratio,
            metrics_address,
            backlog_interval,
            log_level,
            log_format,
        }
    }

    /// `[receipts]`.
    pub(super) fn receipts(&mut self, r: &RawReceipts) -> ReceiptSettings {
        let receipts = ReceiptSettings {
            overdue_after: r.overdue_after.unwrap_or(DEFAULT_OVERDUE_AFTER),
            check_interval: r.check_interval.unwrap_or(DEFAULT_OVERDUE_CHECK),
            retention: r.retention.unwrap_or(DEFAULT_RECEIPT_RETENTION),
        };
        for (key, value) in [
            ("receipts.overdue_after", receipts.overdue_after),
            ("receipts.check_interval", receipts.check_interval),
            ("receipts.retention", receipts.retention),
        ] {
            if value.is_zero() {
                self.error(key, "must be longer than zero");
            }
        }
        if receipts.retention < receipts.overdue_after {
            self.error(
                "receipts.retention",
                "must be at least receipts.overdue_after (an overdue submission must still be known)",
            );
        }
        receipts
    }
}

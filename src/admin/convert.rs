//! Between the admin API's generated types and the service layer's, and the one mapping of
//! a [`ServiceError`] to a gRPC status.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::Status;

use super::service::{
    Commit, DeadLetterSummary, DestinationView, Discarded, Overview, OverviewFilter, ReplayFate,
    ReplayOutcome, Replayed, Resolution, RouteView, Selection, ServiceError, ServiceView, Watched,
};
use crate::activity::Rates;
use crate::model::{DestinationSpec, RouteSpec};
use crate::routing::live::EntrySource;
use crate::store::{AuditEntry, DeadLetter, DeadLetterFilter, DeadLetterState, Fate, TraceEvent};
use crate::wire::admin as pb;

/// The status for a service error: its code, and its message as it is (the service's
/// messages are made for operators and never carry a database's text).
pub fn status(e: ServiceError) -> Status {
    let message = e.to_string();
    match e {
        ServiceError::NotFound(_) => Status::not_found(message),
        ServiceError::PermissionDenied(_) => Status::permission_denied(message),
        ServiceError::InvalidArgument { .. } => Status::invalid_argument(message),
        ServiceError::AlreadyExists(_) => Status::already_exists(message),
        ServiceError::Aborted(_) => Status::aborted(message),
        ServiceError::FailedPrecondition(_) => Status::failed_precondition(message),
        ServiceError::Unavailable(_) => Status::unavailable(message),
        ServiceError::Internal(_) => Status::internal(message),
    }
}

pub fn timestamp(time: SystemTime) -> pbjson_types::Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

pub fn time(ts: Option<&pbjson_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

pub fn source(source: EntrySource) -> i32 {
    match source {
        EntrySource::Config => pb::Source::Config as i32,
        EntrySource::Store => pb::Source::Store as i32,
    }
}

fn rates(r: Rates) -> pb::Rates {
    pb::Rates {
        m1: r.m1,
        m5: r.m5,
        m15: r.m15,
    }
}

/// A text field: empty means "not given".
fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

// ---------------------------------------------------------------------------------------
// Overview

/// The rows asked for; a Land that is none is INVALID_ARGUMENT, naming the entry.
pub fn overview_filter(r: &pb::GetOverviewRequest) -> Result<OverviewFilter, ServiceError> {
    let laender = r
        .laender
        .iter()
        .enumerate()
        .map(|(i, land)| {
            land.trim().parse().map_err(|e| {
                ServiceError::invalid(
                    format!("laender[{i}]"),
                    format!("{e}; a Land is its code (06) or abbreviation (HE)"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let ids = |list: &[String]| list.iter().filter_map(|id| given(id)).collect();
    Ok(OverviewFilter {
        laender,
        platforms: ids(&r.platforms),
        destinations: ids(&r.destinations),
    })
}

pub fn overview(o: Overview) -> pb::Overview {
    pb::Overview {
        version: o.version.to_owned(),
        started_at: Some(timestamp(o.started_at)),
        uptime_seconds: o.uptime.as_secs(),
        store: o.store.to_owned(),
        platforms: o
            .platforms
            .into_iter()
            .map(|p| pb::PlatformStats {
                platform_id: p.id,
                land: p.land.to_string(),
                consumer_state: p.state.as_str().to_owned(),
                consumed: p.consumed,
                forwarded: p.forwarded,
                rejected: p.rejected,
                in_flight: p.in_flight,
                consumed_rate: Some(rates(p.consumed_rate)),
                ingress_queue: p.ingress_queue,
                queue_ready: p.queue.map_or(0, |q| q.ready),
                queue_consumers: p.queue.map_or(0, |q| q.consumers),
                queue_counted_at: p.queue.map(|q| timestamp(q.counted_at)),
            })
            .collect(),
        destinations: o
            .destinations
            .into_iter()
            .map(|d| pb::DestinationStats {
                destination_id: d.id,
                name: d.name,
                delivered: d.delivered,
                failed: d.failed,
                retrying: d.retrying,
                last_error_at: d.last_error.as_ref().map(|(_, at)| timestamp(*at)),
                last_error: d.last_error.map(|(e, _)| e).unwrap_or_default(),
                delivered_rate: Some(rates(d.delivered_rate)),
            })
            .collect(),
        brokers: o
            .brokers
            .into_iter()
            .map(|b| pb::BrokerLink {
                broker: b.broker,
                role: b.role.to_owned(),
                connected: b.connected,
                node: b.node.unwrap_or_default(),
                last_error: b.last_error.unwrap_or_default(),
                blocked: b.blocked.unwrap_or_default(),
            })
            .collect(),
        consumed: o.consumed.map(rates),
        rejected: o.rejected.map(rates),
        dead_letters_pending: o.dead_letters_pending,
        directory_version: o.directory_version,
        instances: o
            .instances
            .into_iter()
            .map(|i| pb::Instance {
                alive: i.alive,
                current: i.current,
                started_at: Some(timestamp(i.instance.started_at)),
                seen_at: Some(timestamp(i.instance.seen_at)),
                id: i.instance.id,
                host: i.instance.host,
                pid: i.instance.pid,
                version: i.instance.version,
                directory_version: i.instance.directory_version,
                consumed: i.instance.consumed,
                forwarded: i.instance.forwarded,
                rejected: i.instance.rejected,
                in_flight: i.instance.in_flight,
            })
            .collect(),
        scope: o.scope.to_string(),
        store_up: o.store_problem.is_none(),
        store_problem: o.store_problem.unwrap_or_default(),
        store_down_since: o.store_down_since.map(timestamp),
    }
}

// ---------------------------------------------------------------------------------------
// Directory

pub fn destination(view: &DestinationView) -> pb::Destination {
    let d = &view.destination;
    pb::Destination {
        id: d.id.clone(),
        name: d.name.clone(),
        kind: d.kind.as_str().to_owned(),
        land: d.land.to_string(),
        broker: view.broker.clone(),
        exchange: d.exchange.clone(),
        routing_key: d.routing_key.clone(),
        source: source(view.source),
        receipt_queue: d.receipt_queue.clone().unwrap_or_default(),
    }
}

/// The destination of a request, `destination: is missing` when there is none.
pub fn destination_from_request(
    d: Option<&pb::Destination>,
) -> Result<DestinationSpec, ServiceError> {
    let d = d.ok_or_else(|| ServiceError::invalid("destination", "is missing"))?;
    Ok(DestinationSpec {
        id: d.id.trim().to_owned(),
        name: d.name.trim().to_owned(),
        kind: d.kind.trim().to_owned(),
        land: d.land.trim().to_owned(),
        broker: d.broker.trim().to_owned(),
        exchange: d.exchange.clone(),
        routing_key: d.routing_key.clone(),
        receipt_queue: d.receipt_queue.trim().to_owned(),
    })
}

/// The route of a request, `route: is missing` when there is none.
pub fn route_from_request(r: Option<&pb::Route>) -> Result<RouteSpec, ServiceError> {
    let r = r.ok_or_else(|| ServiceError::invalid("route", "is missing"))?;
    Ok(RouteSpec {
        service: r.service.trim().to_owned(),
        region: r.region.trim().to_owned(),
        destination: r.destination.trim().to_owned(),
    })
}

pub fn service(s: ServiceView) -> pb::Service {
    pb::Service {
        key: s.key,
        name: s.name,
        source: source(s.source),
    }
}

pub fn route(r: RouteView) -> pb::Route {
    pb::Route {
        service: r.service.to_string(),
        region: r.region.to_string(),
        destination: r.destination,
        source: source(r.source),
        service_name: r.service_name,
        region_name: r.region_name,
        destination_name: r.destination_name,
    }
}

/// Resolve's answer: every step of the walk, and the route that matched.
pub fn resolution(resolution: Resolution) -> pb::ResolveResponse {
    let steps = resolution
        .explanation
        .steps
        .iter()
        .map(|s| pb::ResolveStep {
            service: s.service.to_string(),
            region: s.region.to_string(),
            level: s.region.level().name().to_owned(),
            unit_name: s.unit_name.clone().unwrap_or_default(),
            matched: s.matched.is_some(),
        })
        .collect();
    let matched_rule = resolution
        .explanation
        .resolution
        .map(|found| format!("service {} region {}", found.service, found.region))
        .unwrap_or_default();
    pb::ResolveResponse {
        service: resolution.service.to_string(),
        service_name: resolution.service_name,
        ars: resolution.ars.to_string(),
        region_name: resolution.region_name,
        steps,
        destination: resolution.destination.as_ref().map(destination),
        matched_rule,
    }
}

pub fn audit_entry(e: AuditEntry) -> pb::AuditEntry {
    let r = e.record;
    pb::AuditEntry {
        id: e.id,
        at: Some(timestamp(e.at)),
        actor: r.actor,
        action: r.action,
        object: r.object,
        before: r.before.unwrap_or_default(),
        after: r.after.unwrap_or_default(),
        actor_scope: r.actor_scope,
    }
}

// ---------------------------------------------------------------------------------------
// Dead letters

fn state(state: DeadLetterState) -> i32 {
    match state {
        DeadLetterState::Pending => pb::DeadLetterState::Pending as i32,
        DeadLetterState::Replayed => pb::DeadLetterState::Replayed as i32,
        DeadLetterState::Discarded => pb::DeadLetterState::Discarded as i32,
    }
}

/// A request's filter; none: the pending letters.
pub fn dead_letter_filter(f: Option<&pb::DeadLetterFilter>) -> DeadLetterFilter {
    let Some(f) = f else {
        return DeadLetterFilter {
            state: Some(DeadLetterState::Pending),
            ..DeadLetterFilter::default()
        };
    };
    DeadLetterFilter {
        platform: given(&f.platform),
        reason: given(&f.reason),
        service: given(&f.service),
        destination: given(&f.destination),
        since: time(f.since.as_ref()),
        until: time(f.until.as_ref()),
        state: match pb::DeadLetterState::try_from(f.state) {
            Ok(pb::DeadLetterState::Replayed) => Some(DeadLetterState::Replayed),
            Ok(pb::DeadLetterState::Discarded) => Some(DeadLetterState::Discarded),
            Ok(pb::DeadLetterState::Any) => None,
            _ => Some(DeadLetterState::Pending),
        },
        submission_id: given(&f.submission_id),
        ..DeadLetterFilter::default()
    }
}

/// The letters a replay or discard request selects: its ids, else `all` without a filter,
/// else its filter (which the service refuses when it has no criterion).
pub fn selection(ids: &[String], filter: Option<&pb::DeadLetterFilter>, all: bool) -> Selection {
    if !ids.is_empty() {
        return Selection::Ids(ids.to_vec());
    }
    let unset = filter.is_none_or(|f| *f == pb::DeadLetterFilter::default());
    if all && unset {
        return Selection::All;
    }
    Selection::Matching(dead_letter_filter(Some(
        filter.unwrap_or(&pb::DeadLetterFilter::default()),
    )))
}

pub fn dead_letter(d: DeadLetter) -> pb::DeadLetter {
    let r = d.record;
    let headers = serde_json::from_str::<HashMap<String, String>>(&r.headers).unwrap_or_default();
    pb::DeadLetter {
        id: r.id.to_string(),
        submission_id: r.submission_id,
        platform: r.platform,
        reason: r.reason,
        field: r.field,
        detail: r.detail,
        service: r.service,
        ars: r.ars,
        destination: r.destination,
        dead_lettered_at: Some(timestamp(r.dead_lettered_at)),
        content_type: r.content_type,
        body_bytes: d.body_bytes,
        state: state(d.state),
        state_changed_at: d.state_changed_at.map(timestamp),
        state_changed_by: d.state_changed_by,
        replays: d.replays,
        headers,
    }
}

/// A dry run, else a run guarded by the count the operator confirmed, if given.
pub fn commit(dry_run: bool, expected_count: Option<u32>) -> Commit {
    match (dry_run, expected_count) {
        (true, _) => Commit::DryRun,
        (false, Some(n)) => Commit::IfCount(u64::from(n)),
        (false, None) => Commit::Now,
    }
}

pub fn replayed(r: Replayed) -> pb::ReplayDeadLettersResponse {
    pb::ReplayDeadLettersResponse {
        replayed: r.replayed,
        skipped: r.skipped,
        scope: r.scope.to_string(),
        dry_run: r.dry_run,
        ids: r.ids,
        matched: r.matched,
    }
}

pub fn discarded(d: Discarded) -> pb::DiscardDeadLettersResponse {
    pb::DiscardDeadLettersResponse {
        discarded: u32::try_from(d.discarded).unwrap_or(u32::MAX),
        scope: d.scope.to_string(),
        dry_run: d.dry_run,
        ids: d.ids,
        matched: d.matched,
    }
}

pub fn summary(s: DeadLetterSummary) -> pb::DeadLetterSummary {
    let counts = |counts: Vec<(String, u64)>| {
        counts
            .into_iter()
            .map(|(key, count)| pb::DeadLetterCount { key, count })
            .collect()
    };
    pb::DeadLetterSummary {
        total: s.total,
        by_reason: counts(s.by_reason),
        by_platform: counts(s.by_platform),
        by_destination: counts(s.by_destination),
        scope: s.scope.to_string(),
    }
}

pub fn replay_outcome(o: ReplayOutcome) -> pb::ReplayOutcome {
    use pb::ReplayOutcomeKind as Kind;
    let settled = o.fate.settled();
    let mut out = pb::ReplayOutcome {
        id: o.letter.record.id.to_string(),
        submission_id: o.letter.record.submission_id,
        settled,
        replayed_at: match o.letter.state {
            DeadLetterState::Replayed => o.letter.state_changed_at.map(timestamp),
            _ => None,
        },
        replayed_by: match o.letter.state {
            DeadLetterState::Replayed => o.letter.state_changed_by,
            _ => String::new(),
        },
        ..pb::ReplayOutcome::default()
    };
    let (kind, at) = match o.fate {
        ReplayFate::NotReplayed => (Kind::NotReplayed, None),
        ReplayFate::Discarded => (Kind::Discarded, o.letter.state_changed_at),
        ReplayFate::Waiting => (Kind::Waiting, None),
        ReplayFate::Delivered { destination, at } => {
            out.destination = destination;
            (Kind::Delivered, Some(at))
        }
        ReplayFate::Duplicate { destination, at } => {
            out.destination = destination;
            (Kind::Duplicate, Some(at))
        }
        ReplayFate::Retrying {
            destination,
            detail,
            at,
        } => {
            out.destination = destination;
            out.detail = detail;
            (Kind::Retrying, Some(at))
        }
        ReplayFate::DeadLettered {
            dead_letter,
            reason,
            detail,
            at,
        } => {
            out.dead_letter_id = dead_letter.map(|id| id.to_string()).unwrap_or_default();
            out.reason = reason;
            out.detail = detail;
            (Kind::DeadLettered, Some(at))
        }
    };
    out.outcome = kind as i32;
    out.at = at.map(timestamp);
    out
}

// ---------------------------------------------------------------------------------------
// Operations

pub fn trace_event(e: TraceEvent) -> pb::TraceEvent {
    pb::TraceEvent {
        at: Some(timestamp(e.at)),
        event: e.event,
        platform: e.platform,
        destination: e.destination,
        detail: e.detail,
    }
}

pub fn overdue(f: Fate) -> pb::OverdueSubmission {
    pb::OverdueSubmission {
        submission_id: f.submission_id.to_string(),
        platform: f.platform,
        destination: f.destination,
        delivered_at: Some(timestamp(f.delivered_at)),
        reported_at: f.overdue_reported_at.map(timestamp),
    }
}

pub fn routing_event(w: Watched) -> pb::RoutingEvent {
    let e = w.event;
    pb::RoutingEvent {
        at: Some(timestamp(e.at)),
        submission_id: e.submission_id,
        platform: e.platform,
        destination: e.destination,
        outcome: e.outcome,
        reason: e.reason,
        missed: w.missed.unwrap_or(0),
        lagged: w.lagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_error_keeps_its_message_under_its_code() {
        let cases = [
            (
                ServiceError::NotFound("dead letter x does not exist".into()),
                tonic::Code::NotFound,
                "dead letter x does not exist",
            ),
            (
                ServiceError::PermissionDenied("outside".into()),
                tonic::Code::PermissionDenied,
                "outside",
            ),
            (
                ServiceError::invalid("filter.state", "only pending"),
                tonic::Code::InvalidArgument,
                "filter.state: only pending",
            ),
            (
                ServiceError::AlreadyExists("exists".into()),
                tonic::Code::AlreadyExists,
                "exists",
            ),
            (
                ServiceError::Aborted("meanwhile".into()),
                tonic::Code::Aborted,
                "meanwhile",
            ),
            (
                ServiceError::FailedPrecondition("file".into()),
                tonic::Code::FailedPrecondition,
                "file",
            ),
            (
                ServiceError::Unavailable("later".into()),
                tonic::Code::Unavailable,
                "later",
            ),
            (
                ServiceError::Internal("log".into()),
                tonic::Code::Internal,
                "log",
            ),
        ];
        for (error, code, message) in cases {
            let status = status(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    #[test]
    fn a_selection_is_ids_else_all_else_the_filter() {
        let some = pb::DeadLetterFilter {
            reason: "no-route".into(),
            ..pb::DeadLetterFilter::default()
        };
        let empty = pb::DeadLetterFilter::default();
        let matching = |f: &pb::DeadLetterFilter| Selection::Matching(dead_letter_filter(Some(f)));
        let cases = [
            (
                vec!["a".to_owned()],
                Some(&some),
                true,
                Selection::Ids(vec!["a".into()]),
            ),
            (vec![], None, true, Selection::All),
            (vec![], Some(&empty), true, Selection::All),
            (vec![], Some(&some), true, matching(&some)),
            (vec![], Some(&some), false, matching(&some)),
            (vec![], None, false, matching(&empty)),
        ];
        for (ids, filter, all, want) in cases {
            assert_eq!(
                selection(&ids, filter, all),
                want,
                "{ids:?} {filter:?} {all}"
            );
        }
    }
}

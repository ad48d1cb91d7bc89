//! The routing directory: destinations, routes, services, the audit log and resolutions.

use ozg_gateway::wire::admin as api;

use super::{Table, block, clean, or_dash, sections, source, time};

pub fn destinations(list: &[api::Destination]) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "KIND",
        "LAND",
        "BROKER",
        "EXCHANGE",
        "ROUTING KEY",
        "SOURCE",
    ]);
    for d in list {
        table.row(&[
            &d.id,
            &d.name,
            &d.kind,
            &d.land,
            &d.broker,
            or_dash(&d.exchange),
            or_dash(&d.routing_key),
            source(d.source),
        ]);
    }
    table.render()
}

pub fn destination(d: &api::Destination) -> String {
    block(&[
        ("id", d.id.clone()),
        ("name", d.name.clone()),
        ("kind", d.kind.clone()),
        ("land", d.land.clone()),
        ("broker", d.broker.clone()),
        ("exchange", or_dash(&d.exchange).into()),
        ("routing key", or_dash(&d.routing_key).into()),
        ("source", source(d.source).into()),
    ])
}

pub fn routes(list: &[api::Route]) -> String {
    let mut table = Table::new(&[
        "SERVICE",
        "REGION",
        "DESTINATION",
        "SOURCE",
        "SERVICE NAME",
        "REGION NAME",
        "DESTINATION NAME",
    ]);
    for r in list {
        table.row(&[
            &r.service,
            &r.region,
            &r.destination,
            source(r.source),
            or_dash(&r.service_name),
            or_dash(&r.region_name),
            or_dash(&r.destination_name),
        ]);
    }
    table.render()
}

pub fn route(r: &api::Route) -> String {
    block(&[
        ("service", named(&r.service, &r.service_name)),
        ("region", named(&r.region, &r.region_name)),
        ("destination", named(&r.destination, &r.destination_name)),
        ("source", source(r.source).into()),
    ])
}

fn named(key: &str, name: &str) -> String {
    if name.is_empty() {
        key.to_owned()
    } else {
        format!("{key} ({name})")
    }
}

pub fn services(list: &[api::Service]) -> String {
    let mut table = Table::new(&["KEY", "NAME", "SOURCE"]);
    for s in list {
        table.row(&[&s.key, &s.name, source(s.source)]);
    }
    table.render()
}

pub fn service(s: &api::Service) -> String {
    block(&[
        ("key", s.key.clone()),
        ("name", s.name.clone()),
        ("source", source(s.source).into()),
    ])
}

pub fn audit(entries: &[api::AuditEntry]) -> String {
    let mut table = Table::new(&[
        "ID", "AT", "ACTOR", "SCOPE", "ACTION", "OBJECT", "BEFORE", "AFTER",
    ])
    .right(&[0]);
    for e in entries {
        table.row(&[
            &e.id.to_string(),
            &time(e.at.as_ref()),
            &e.actor,
            or_dash(&e.actor_scope),
            &e.action,
            &e.object,
            or_dash(&e.before),
            or_dash(&e.after),
        ]);
    }
    table.render()
}

pub fn resolution(r: &api::ResolveResponse) -> String {
    let head = block(&[
        ("service", named(&r.service, &r.service_name)),
        ("region", named(&r.ars, &r.region_name)),
    ]);
    let mut steps = Table::new(&["SERVICE", "REGION", "LEVEL", "UNIT", "MATCHED"]);
    for s in &r.steps {
        steps.row(&[
            &s.service,
            &s.region,
            &s.level,
            or_dash(&s.unit_name),
            if s.matched { "yes" } else { "no" },
        ]);
    }
    let verdict = match r.destination.as_ref().filter(|d| !d.id.is_empty()) {
        Some(d) => format!(
            "→ {} ({}, {}) by rule {}\n",
            clean(&d.id),
            clean(&d.name),
            clean(&d.kind),
            clean(&r.matched_rule)
        ),
        None => "→ no route: a submission would be dead-lettered with reason no-route\n".into(),
    };
    sections(&[head, steps.render() + &verdict])
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Jurisdiction resolution with the full embedded directory and 10,000 rules.
//!
//! The table is sparse like a real one: `*` rules for every Land and for about a third of the
//! Kreise, service-specific rules for 64 LeiKa keys at Kreis, Gemeindeverband and Gemeinde
//! level. Lookups are Gemeinden drawn by population, with services drawn from the 64 routed
//! keys plus 16 that have no specific rule, so most lookups walk up several levels and many
//! fall through to the `*` pass.

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ozg_gateway::model::Route;
use ozg_gateway::model::{Ars, RegionPrefix, ServiceKey, ServiceSelector};
use ozg_gateway::municipalities::{Municipalities, UnitKind};
use ozg_gateway::routing::table::RoutingTable;

const RULES: usize = 10_000;
const LOOKUPS: usize = 4_096;
const ROUTED_SERVICES: u64 = 64;
const UNROUTED_SERVICES: u64 = 16;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn service(n: u64) -> ServiceKey {
    format!("99{:012}", 100_000_000 + n * 1_001)
        .parse()
        .unwrap()
}

struct Fixture {
    directory: Municipalities,
    table: RoutingTable,
    lookups: Vec<(ServiceKey, Ars)>,
}

fn fixture() -> Fixture {
    let directory = Municipalities::embedded().expect("embedded directory");
    let mut laender = Vec::new();
    let mut kreise = Vec::new();
    let mut verbaende = Vec::new();
    let mut gemeinden: Vec<(RegionPrefix, u64)> = Vec::new();
    for unit in directory.units() {
        match unit.kind {
            UnitKind::Land => laender.push(unit.prefix),
            UnitKind::Regierungsbezirk => {}
            UnitKind::Kreis { .. } => kreise.push(unit.prefix),
            UnitKind::Gemeindeverband => verbaende.push(unit.prefix),
            UnitKind::Gemeinde { .. } => gemeinden.push((unit.prefix, unit.population)),
        }
    }
    // units() iterates a HashMap: sort so that the fixture is the same on every run.
    laender.sort();
    kreise.sort();
    verbaende.sort();
    gemeinden.sort();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seen: HashSet<(ServiceSelector, RegionPrefix)> = HashSet::new();
    let mut routes = Vec::with_capacity(RULES);
    let mut add = |service: ServiceSelector, region: RegionPrefix, routes: &mut Vec<Route>| {
        if routes.len() < RULES && seen.insert((service, region)) {
            let destination = routes.len() % 400;
            routes.push(Route {
                service,
                region,
                destination,
            });
        }
    };
    for &land in &laender {
        add(ServiceSelector::Any, land, &mut routes);
    }
    for &kreis in kreise.iter().step_by(3) {
        add(ServiceSelector::Any, kreis, &mut routes);
    }
    while routes.len() < RULES {
        let s = ServiceSelector::Exact(service(rng.next() % ROUTED_SERVICES));
        // 30 % Kreis, 30 % Gemeindeverband, 40 % Gemeinde.
        let region = match rng.below(10) {
            0..=2 => kreise[rng.below(kreise.len())],
            3..=5 => verbaende[rng.below(verbaende.len())],
            _ => gemeinden[rng.below(gemeinden.len())].0,
        };
        add(s, region, &mut routes);
    }
    let table = RoutingTable::new(routes);

    // Gemeinden weighted by population (cumulative sums, binary search).
    let mut cumulative = Vec::with_capacity(gemeinden.len());
    let mut total = 0u64;
    for &(_, population) in &gemeinden {
        total += population.max(1);
        cumulative.push(total);
    }
    let lookups = (0..LOOKUPS)
        .map(|_| {
            let x = rng.next() % total;
            let i = cumulative.partition_point(|&c| c <= x);
            let ars = gemeinden[i].0.as_ars().unwrap();
            let s = service(rng.next() % (ROUTED_SERVICES + UNROUTED_SERVICES));
            (s, ars)
        })
        .collect();
    Fixture {
        directory,
        table,
        lookups,
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let mut i = 0usize;
    c.bench_function("resolve (10k rules, population-weighted Gemeinden)", |b| {
        b.iter(|| {
            let (s, ars) = f.lookups[i % LOOKUPS];
            i = i.wrapping_add(1);
            black_box(f.table.resolve(black_box(s), black_box(ars)))
        })
    });
    let mut j = 0usize;
    c.bench_function("explain (10k rules, population-weighted Gemeinden)", |b| {
        b.iter(|| {
            let (s, ars) = f.lookups[j % LOOKUPS];
            j = j.wrapping_add(1);
            black_box(f.table.explain(black_box(s), black_box(ars), &f.directory))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

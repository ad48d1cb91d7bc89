//! Rewrites the seed corpus of the `decode` fuzz target (`fuzz/seeds/decode/`) from
//! `ozg_gateway::sample`: `cargo run --example write_fuzz_seeds`. The first byte of each
//! seed picks the content type, as in `fuzz/fuzz_targets/decode.rs` (index into its
//! `CONTENT_TYPES`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample::{self, SampleSpec};

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decode");
    std::fs::create_dir_all(&dir).unwrap();
    for old in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(old.unwrap().path()).unwrap();
    }
    let spec = |platform_id, land, service_key, region| SampleSpec {
        platform_id,
        land,
        service_key,
        region,
        size: 900,
    };
    let hessen = spec("civento-he", "06", "99115005104000", "064110000000");
    let by_ags = spec("civento-he", "06", "99115005104000", "06431001");
    let foreign = spec("civento-th", "16", "99115005104000", "160510000000");
    let bad_key = spec("civento-he", "06", "12345678901234", "064110000000");
    let unknown = spec("civento-he", "06", "99115005104000", "064119999999");
    // (file name, content type selector, submission, encoding)
    let seeds: [(&str, u8, &SampleSpec<'_>, Encoding); 10] = [
        ("valid-ars.pb", 0, &hessen, Encoding::Protobuf),
        ("valid-ars.json", 1, &hessen, Encoding::Json),
        ("valid-ags.pb", 5, &by_ags, Encoding::Protobuf),
        ("valid-ags-charset.json", 4, &by_ags, Encoding::Json),
        ("valid-params.pb", 6, &hessen, Encoding::Protobuf),
        ("origin-mismatch.json", 1, &foreign, Encoding::Json),
        ("invalid-service-key.pb", 0, &bad_key, Encoding::Protobuf),
        ("unknown-region.json", 1, &unknown, Encoding::Json),
        ("missing-content-type.pb", 2, &hessen, Encoding::Protobuf),
        ("text-plain.json", 3, &hessen, Encoding::Json),
    ];
    for (name, selector, spec, encoding) in seeds {
        let mut data = vec![selector];
        data.extend(sample::encode(&sample::submission(spec), encoding));
        std::fs::write(dir.join(name), data).unwrap();
    }
}

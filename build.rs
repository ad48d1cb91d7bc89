//! Compiles the wire contracts in proto/ with protox (no system protoc needed), then
//! generates prost types, tonic services (server and client of the admin API) and the
//! canonical proto3 JSON mapping (pbjson). The encoded descriptor set is also what server
//! reflection serves, so grpcurl needs no proto files.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    build_info();
    let protos = [
        "proto/ozg/gateway/v1/submission.proto",
        "proto/ozg/gateway/v1/status.proto",
        "proto/ozg/gateway/v1/receipt.proto",
        "proto/ozg/gateway/admin/v1/admin.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let file_descriptors = protox::compile(protos, ["proto"])?;
    let descriptor_bytes = file_descriptors.encode_to_vec();
    fs::write(out_dir.join("ozg_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Payload-carrying messages get a hand-written Debug that redacts content
        // (src/wire.rs), so no `{:?}` can ever print personal data.
        .skip_debug([
            ".ozg.gateway.v1.FormData",
            ".ozg.gateway.v1.Attachment",
            ".ozg.gateway.v1.ReplyChannel",
            ".ozg.gateway.admin.v1.DeadLetterPayload",
        ])
        .compile_fds(file_descriptors)?;

    // Unknown JSON fields are refused (pbjson's default, and the proto3 JSON mapping's): in
    // JSON an unknown name is most often a misspelt one whose data would otherwise vanish
    // unseen. README, "The wire contract".
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".ozg.gateway.v1"])?;
    // The admin API's JSON (`admin --json`, what scripts read) keeps fields at their default
    // value, the proto3 mapping's "emit default values" option: a counter at zero reads
    // `"consumed": "0"`, not a missing key. The platforms' wire contract above stays lean.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .emit_fields()
        .build(&[".ozg.gateway.admin"])?;
    Ok(())
}

/// What `ozg_build_info` reports: the compiler, and the commit built from when it is known:
/// `OZG_GIT_COMMIT` (a container build has no .git) or the checkout's HEAD; and that
/// commit's date, for the manual pages.
fn build_info() {
    use std::process::Command;
    let output = |command: &mut Command| {
        command
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = output(Command::new(rustc).arg("--version")).unwrap_or_default();
    println!("cargo:rustc-env=OZG_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=OZG_GIT_COMMIT");
    let commit = env::var("OZG_GIT_COMMIT").ok().or_else(|| {
        let git = |args: &[&str]| output(Command::new("git").args(args));
        let commit = git(&["rev-parse", "HEAD"])?;
        // Built again when HEAD moves: the files git names for HEAD and the branch.
        for path in [
            git(&["rev-parse", "--git-path", "HEAD"]),
            git(&["rev-parse", "--symbolic-full-name", "HEAD"])
                .and_then(|branch| git(&["rev-parse", "--git-path", &branch])),
            git(&["rev-parse", "--git-path", "packed-refs"]),
        ]
        .into_iter()
        .flatten()
        // A path that does not exist would make cargo run this on every build.
        .filter(|path| std::path::Path::new(path).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
        Some(commit)
    });
    // The manual pages' date (`ozg-gateway man`): the commit's, so that a build says the same
    // whenever it is made.
    let date = commit
        .as_deref()
        .and_then(|c| output(Command::new("git").args(["show", "-s", "--format=%cs", c])));
    println!(
        "cargo:rustc-env=OZG_COMMIT_DATE={}",
        date.unwrap_or_else(|| "unknown".to_owned())
    );
    println!(
        "cargo:rustc-env=OZG_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
}

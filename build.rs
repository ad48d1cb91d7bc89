//! Compiles the wire contracts in proto/ with protox (no system protoc needed), then
//! generates prost types, tonic services (server and client of the admin API) and the
//! canonical proto3 JSON mapping (pbjson). The encoded descriptor set is also what server
//! reflection serves, so grpcurl needs no proto files.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
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

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .extern_path(".google.protobuf", "::pbjson_types")
        // Unknown JSON fields are refused (pbjson's default, and the proto3 JSON mapping's):
        // in JSON an unknown name is most often a misspelt one whose data would otherwise
        // vanish unseen. README, "The wire contract".
        .build(&[".ozg"])?;
    Ok(())
}

//! Compiles `proto/` into Rust for the `citadel-proto` crate (which names this file as its build
//! script). `protox` parses the .proto files in pure Rust, so no `protoc` needs to be installed;
//! the encoded descriptor set is written next to the generated code for gRPC server reflection.

use std::{env, fs, io, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "citadel/v1/embeddings.proto",
    "citadel/v1/workflows.proto",
    "citadel/v1/completions.proto",
    "citadel/v1/vectors.proto",
];

fn main() -> io::Result<()> {
    // This script lives at the workspace root but runs with the proto crate's directory as cwd.
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(io::Error::other)?).join("../..");
    let proto_dir = root.join("proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    let fds = protox::compile(PROTOS, [&proto_dir]).map_err(io::Error::other)?;
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(io::Error::other)?);
    fs::write(out_dir.join("citadel_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // Malformed requests are INVALID_ARGUMENT, not prost's INTERNAL (crates/proto codec.rs).
        .codec_path("crate::codec::StrictCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
}

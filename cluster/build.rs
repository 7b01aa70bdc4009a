//! Compiles `proto/mesh.proto` with protox (pure Rust: no system `protoc`)
//! and generates the tonic client and server. `PublishBatch` is not
//! generated: it is decoded by hand (`src/batch.rs`), straight into broker
//! values.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/mesh.proto");
    let fds = protox::compile(["mesh.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".tern.mesh")
        .extern_path(".tern.mesh.PublishBatch", "crate::batch::Batch")
        .compile_fds(fds)?;
    Ok(())
}

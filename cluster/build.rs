//! Compiles `proto/mesh.proto` with protox (pure Rust: no system `protoc`)
//! and generates the tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/mesh.proto");
    let fds = protox::compile(["mesh.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".tern.mesh")
        .compile_fds(fds)?;
    Ok(())
}

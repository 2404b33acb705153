//! Generates the Workload API types and tonic glue from `proto/workload.proto`.
//!
//! `protox` parses the schema in pure Rust, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    let fds = protox::compile(["workload.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // These messages carry a private key or a bearer token; src/proto.rs gives them
        // a Debug impl that leaves the secret out.
        .skip_debug([".X509SVID", ".JWTSVID", ".ValidateJWTSVIDRequest"])
        .compile_fds(fds)?;
    Ok(())
}

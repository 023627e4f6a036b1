//! Generates the prost types for the Core ML schema subset in `proto/` with protox (no system `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["model.proto", "mil.proto"], ["proto"])?;
    prost_build::Config::new()
        .include_file("coreml.rs")
        .compile_fds(descriptors)?;
    Ok(())
}

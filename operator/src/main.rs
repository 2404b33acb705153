//! `spike-operator`: see the library docs.

fn main() -> std::process::ExitCode {
    eprintln!("spike-operator: the controllers are not wired in yet");
    std::process::ExitCode::FAILURE
}

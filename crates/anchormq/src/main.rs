//! The `anchormq` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    anchormq::main_entry()
}

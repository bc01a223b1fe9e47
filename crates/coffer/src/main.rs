fn main() -> std::process::ExitCode {
    coffer::cli::main()
}

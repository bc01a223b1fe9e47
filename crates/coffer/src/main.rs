// mimalloc: the server allocates per request (JSON, ids, replies); glibc's
// malloc was 15 % of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    coffer::cli::main()
}

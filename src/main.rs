//! The `tmpvault` binary: everything lives in the library (see `lib.rs`).

/// Every heap block is wiped as it is freed, so the copies of a secret that
/// hyper and rustls make do not outlive their buffers (see `alloc.rs`).
#[global_allocator]
static ALLOCATOR: tmpvault::posture::alloc::ZeroizingAllocator =
    tmpvault::posture::alloc::ZeroizingAllocator;

fn main() -> std::process::ExitCode {
    tmpvault::cmd::cli::main()
}

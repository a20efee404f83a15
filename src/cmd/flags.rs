//! Flags that several commands share, defined once.

use clap::Args;

use crate::config::SecretArena;

/// `--secret-arena`, shared by `serve`, `selfcheck` and `dev`.
#[derive(Debug, Args)]
pub struct ArenaArgs {
    /// Where stored values live: `memfd-secret` (pages the kernel itself cannot read), `mlock`, `heap`, or `auto`: the first of these the kernel and RLIMIT_MEMLOCK allow.
    #[arg(
        long,
        env = "TMPVAULT_SECRET_ARENA",
        value_enum,
        default_value = "auto"
    )]
    pub secret_arena: SecretArena,
}

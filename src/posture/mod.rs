//! The process's security posture: the startup self-check and its fixes
//! ([`selfcheck`]), the hardening the process applies to itself
//! ([`harden`]) and the global allocator that wipes freed memory
//! ([`alloc`], one of the crate's three `unsafe` modules).

pub mod alloc;
pub mod harden;
pub mod selfcheck;

//! Process hardening (placeholder until the self-check lands).

//! The startup self-check (placeholder until it lands).

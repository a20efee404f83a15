//! The commands a user types: the clap command line and its `TMPVAULT_*`
//! variables ([`cli`]), `tmpvault dev` ([`dev`]), the mTLS client behind
//! `put`/`get`/... ([`client`]) and `tmpvault run` ([`run`]).

pub mod cli;
pub mod client;
pub mod dev;
pub mod run;

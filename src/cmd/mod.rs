//! The commands a user types: the clap command line and its `TMPVAULT_*`
//! variables ([`cli`]), `tmpvault dev` ([`dev`]), flags several commands share ([`flags`]), the mTLS client behind
//! `put`/`get`/... ([`client`]) and `tmpvault run` ([`run`]).

pub mod cli;
pub mod client;
pub mod dev;
pub mod flags;
pub mod run;

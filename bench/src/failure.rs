//! The bench's one error type: what was being done, and why it failed.
//!
//! A benchmark run is a long sequence of steps (generate certificates,
//! start Redis, load tmpvault, ...); when one fails the useful message names
//! that step, so every fallible call is wrapped with [`Step::step`].

use std::error::Error;
use std::fmt;

/// A failed step of the run.
#[derive(Debug)]
pub struct Failure {
    step: String,
    reason: Box<dyn Error + Send + Sync>,
}

impl Failure {
    /// A failure with a plain reason, for conditions that are not errors of
    /// some library (a process that exited, a figure that is missing).
    pub fn new(step: impl Into<String>, reason: impl Into<String>) -> Failure {
        Failure {
            step: step.into(),
            reason: reason.into().into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.reason)
    }
}

// The reason is already part of `Display`; returning it as `source` too
// would print it twice wherever a chain is printed.
impl Error for Failure {}

/// Names the step a fallible call belongs to.
pub trait Step<T> {
    /// Wraps the error with `step`, computed only on failure.
    fn step(self, step: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T, E: Into<Box<dyn Error + Send + Sync>>> Step<T> for Result<T, E> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|reason| Failure {
            step: step(),
            reason: reason.into(),
        })
    }
}

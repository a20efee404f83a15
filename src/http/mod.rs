//! HTTPS serving: the accept loop, its deadlines and the connection cap
//! ([`server`], [`admission`]), the request counters ([`counters`]), answers sent before a body is read
//! ([`early`]), the HTTP/2 control-frame flood guard under hyper
//! ([`h2guard`]), a connection's timers polled only when they fire
//! ([`onwake`]), the wiping of request bodies on open connections
//! ([`wipe`]), the v1 routes ([`api`]) and the one place an error becomes
//! an RFC 9457 problem ([`problem`]).

pub mod admission;
pub mod api;
pub mod counters;
pub mod early;
pub mod h2guard;
pub mod onwake;
pub mod problem;
pub mod server;
pub mod wipe;

//! graphq: the backend that makes a collaborative graph editor feel instant.
//!
//! Clients send graph edits as commands; graphq queues them durably in Redis
//! Streams, applies them atomically in Redis with Lua, and tells every
//! subscriber the outcome in version order.
//!
//! # Layout
//!
//! - [`auth`]: access tokens (HS256 JWT): mint, verify, what they grant.
//! - [`config`]: settings from `config/default.toml`, a `--config` file,
//!   `GRAPHQ_*` environment variables and flags, in that order.
//! - [`db`]: the Redis connection handle.
//! - [`keys`]: every Redis key name, built in one place.
//! - [`resp`]: raw RESP connections for the multi-megabyte state read.
//! - [`scripts`]: the Lua scripts of `lua/`, compiled in and invoked by SHA.
//! - [`gateway`]: HTTP API, WebSocket protocol and the broadcaster.
//! - [`protocol`]: the WebSocket messages and close codes as types.
//! - [`graph`]: commands, their validation, and the graph store (Lua) with
//!   state, change log, conflicts, undo/redo and verify.
//! - [`metrics`]: Prometheus metrics of gateway and worker.
//! - [`queue`]: the job queue engine (ordered partitions, priorities, retries,
//!   dead letters, delayed and repeatable jobs, rate limits, crash recovery).
//! - [`os`]: file-descriptor limits for processes with many sockets.
//! - [`redis_server`]: starts a private `redis-server` child (`graphq dev`).
//!
//! The processors that run on the queues, the composition root that starts
//! gateways and workers, the `graphq` command line and binary, and `graphq
//! bench` are the `graphq-workers` crate in `workers/`, built on this one.

pub mod auth;
pub mod config;
pub mod db;
pub mod gateway;
pub mod graph;
pub mod keys;
pub mod metrics;
pub mod os;
pub mod protocol;
pub mod queue;
pub mod redis_server;
pub mod resp;
pub mod scripts;

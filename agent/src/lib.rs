//! Muster's node agent.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library. Each boot phase
//! of `DESIGN.md` is a module; inside a module, fetching and other side
//! effects are kept apart from pure parse/plan functions so the decisions are
//! testable without machines.

pub mod agent;
pub mod cmdline;
pub mod config;
pub mod logging;
pub mod metadata;
pub mod retry;
pub mod state;

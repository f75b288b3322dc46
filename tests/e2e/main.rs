//! End-to-end tests across processes: the `consulta` binary as an admin and a developer run it, against
//! a real Synapse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod admin_workflow;
mod dev_stack;
mod sfu;
mod support;

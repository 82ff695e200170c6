//! WCCP version 2 (draft-wilson-wrec-wccp-v2-01 and the v2 revision 1 draft,
//! draft-mclaggan-wccp-v2rev1-00), with no I/O of its own.
//!
//! Everything here is a pure function of its inputs, so the daemons, the tests and the
//! benchmarks drive the same code: [`wire`] turns bytes into typed messages and back.

pub mod assign;
pub mod wire;

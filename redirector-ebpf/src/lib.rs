//! The router's data plane.

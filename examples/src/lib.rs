//! Shared bits of the example programs.

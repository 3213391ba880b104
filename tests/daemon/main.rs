//! Integration tests: a real daemon on a real socket against a real SoftHSM2 token.

mod attestation;
mod audit;
mod bad_input;
mod ceremony;
mod common;
mod interop;
mod keys;
mod lifecycle;
mod limits;
mod mint;
mod publish;
mod sign;
mod startup;
mod wire;

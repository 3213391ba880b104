//! Integration tests: a real daemon on a real socket against a real SoftHSM2 token.

mod attestation;
mod audit;
mod auditagg;
mod bad_input;
mod ceremony;
mod common;
mod faults;
mod hardening;
mod interop;
mod keys;
mod lifecycle;
mod limits;
mod mint;
mod openapi;
mod publish;
mod publishing;
mod replicas;
mod scale;
mod sign;
mod signatures;
mod signer;
mod soak;
mod startup;
mod state;
mod tls;
mod wire;

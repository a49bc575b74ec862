//! `tsb-sim`: a simulator of the Securosys Transaction Security Broker (TSB) REST API.
//!
//! It implements the `/v1/` endpoints of the contract in `docs/tsb-api.md` with real
//! keys and real signatures (RSA, ECDSA P-256/384/521, Ed25519, ML-DSA, SLH-DSA, LMS), the
//! Smart Key Attributes approval workflow, authentication (JWT bearer token, API keys per role,
//! mTLS), TLS with a generated CA, fault injection, and a `/sim/` control interface for tests
//! and operators.
//!
//! The files form layers: a file uses files of lower layers only (`src/layering.rs` of the
//! workspace reads this diagram and fails when a path in code runs the wrong way).
//!
//! ```text
//! 10  lib.rs                   the public API: re-exports, `DEMO_TOML`, `endpoint_name`
//! 9   simulator                `Simulator`: start, stop, the handle tests hold
//! 8   server                   listeners, TLS, dispatch (auth, faults, counts), cluster nodes
//! 7   api  control             the `/v1/` routes of the TSB contract; the `/sim/` routes
//! 6   keygen  hostile          key creation and deletion; hostile answers and key actions
//! 5   state  attestation       what the handlers share; the signed attributes response
//! 4   certs                    certificates of keys, CSRs, the TLS CA, building a key
//! 3   keys                     key material, signatures, the attributes document
//! 2   policy  pqc              approval machines, TSB policy documents; post-quantum keys
//! 1   config  util  cluster    the configuration; small helpers; the listeners' state
//! 0   error  faults  network   errors; faults and what they remember; round-trip emulation
//! ```
//!
//! ```no_run
//! use tsb_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::fast_test()).unwrap();
//! println!("TSB at {}", sim.url());
//! ```
#![forbid(unsafe_code)]

mod api;
mod attestation;
mod certs;
mod cluster;
pub mod config;
mod control;
mod error;
mod faults;
pub mod hostile;
mod keygen;
mod keys;
mod network;
mod policy;
mod pqc;
mod server;
mod simulator;
mod state;
mod util;

pub use cluster::{ListenerInfo, NodeFault};
pub use config::{
    ApiKeys, AuthConfig, CertificateFormat, CertificateSpec, ClientAuth, Curve, GroupSpec,
    KeyAlgorithm, KeySpec, PolicySpec, PqcSignatureNames, ServerCertMode, SimConfig, TlsConfig,
    TokenSpec,
};
pub use error::{ApiError, SimError};
pub use faults::{Fault, FaultKind};
pub use hostile::{hostile_key_specs, KeySwap};
pub use simulator::Simulator;
pub use state::SignRecord;

/// The commented demo configuration file (`tsb-sim/demo.toml`), equal to [`SimConfig::demo`].
pub const DEMO_TOML: &str = include_str!("../demo.toml");

/// Counter name of a request, as used by [`Simulator::counter`]: the method and the path with
/// path parameters removed, e.g. `endpoint_name("GET", "/v1/request/42")` is
/// `"GET /v1/request"`.
pub fn endpoint_name(method: &str, path: &str) -> String {
    let method = method
        .parse::<axum::http::Method>()
        .unwrap_or(axum::http::Method::GET);
    server::endpoint_name(&method, path)
}

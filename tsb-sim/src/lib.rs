//! `tsb-sim`: a simulator of the Securosys Transaction Security Broker (TSB) REST API.
//!
//! It implements the `/v1/` endpoints of the contract in `docs/tsb-api.md` with real
//! keys and real signatures (RSA, ECDSA P-256/384/521, Ed25519, ML-DSA, SLH-DSA, LMS), the Smart
//! Key Attributes approval workflow, authentication (JWT bearer token, API keys per role, mTLS), TLS with a
//! generated CA, fault injection, and a `/sim/` control interface for tests and operators.
//!
//! ```no_run
//! use tsb_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::fast_test()).unwrap();
//! println!("TSB at {}", sim.url());
//! ```
#![forbid(unsafe_code)]

mod api;
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

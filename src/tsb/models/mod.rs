//! Request and response types of the TSB REST API.
//!
//! Responses are parsed by serde derive over wire structs, leniently: missing fields take
//! defaults, numbers and booleans may come as strings, and the few shapes a real TSB (or a
//! proxy, or another version) may use beside the documented contract are accepted (each
//! file lists them; docs/tsb-api.md has the contract). Errors name the JSON path of the field.
//! `keys::parse_key_attributes_checked`, `status::parse_request_status_checked` and
//! `parse_version_info_checked` also list the fields the module does not know, for
//! `tsb-pkcs11 doctor` (the one list of the fields the module knows is these types).
//!
//! Files: `requests.rs` (bodies the module sends), `keys.rs` (key attributes, key list),
//! `policy.rs` (Smart Key Attributes policies), `status.rs` (approval request status),
//! `version.rs` (the TSB version), `responses.rs` (the answers to signing and certificate calls),
//! `lenient.rs` (the lenient serde helpers, base64/PEM decoding).

pub mod keys;
mod lenient;
mod policy;
mod requests;
mod responses;
pub mod status;
mod version;

#[cfg(test)]
mod tests;

pub(crate) use keys::parse_key_list_checked;
pub use keys::KeyList;
/// The parsers without the doctor's findings, for the tests and the fuzz targets.
#[cfg(any(test, fuzzing))]
pub(crate) use keys::{parse_key_attributes, parse_key_list};
pub use keys::{KeyAttributes, KeyFlags};
pub(crate) use lenient::decode_pem_or_b64;
pub use policy::Policy;
pub(crate) use requests::password_chars;
pub use requests::SignRequest;
pub(crate) use responses::{CertificateResponse, SignRequestCreated, SignResponse};
pub(crate) use status::parse_request_status;
pub use status::{RequestState, RequestStatus};
pub use version::parse_version_info_checked;

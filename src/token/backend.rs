//! What the token needs from the TSB, as a small trait: the TSB REST client implements it, and the
//! in-process core tests (`src/token/tests/`) implement it with a fake, so every PKCS#11 rule of
//! `token/` can be tested without a network, a simulator or `dlopen`.

use std::sync::Arc;

use crate::config::{Config, Secret};
use crate::tsb::{
    KeyAttributes, NetOptions, NewKey, RequestStatus, SignRequest, SignatureCheck, TsbClient,
    TsbError,
};

/// The TSB operations the token uses (docs/tsb-api.md). Errors are the TSB client's, which
/// `crate::error::map_tsb_error` turns into return values.
pub trait Backend: Send + Sync {
    /// `GET /v1/key`: the labels of the keys.
    fn list_keys(&self) -> Result<Vec<String>, TsbError>;
    /// A key's attributes (with its password when it has one).
    fn key_attributes(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<KeyAttributes, TsbError>;
    /// The key's certificate (DER), `None` when it has none.
    fn certificate(&self, label: &str) -> Result<Option<Vec<u8>>, TsbError>;
    /// Stores a certificate (DER) for a key.
    fn import_certificate(&self, label: &str, der: &[u8]) -> Result<(), TsbError>;
    /// Removes a key's certificate.
    fn delete_certificate(&self, label: &str) -> Result<(), TsbError>;
    /// `POST /v1/synchronousSign`: the signature as `check` makes it of the TSB's answer.
    /// `check` refusing an answer is a `TsbErrorKind::Refused` error with its text; the TSB
    /// client may send the request once more on a new connection first (an answer refused on a
    /// kept-alive connection may be a late answer to an earlier request).
    fn sign_synchronous(
        &self,
        req: &SignRequest,
        check: &SignatureCheck<'_>,
    ) -> Result<Vec<u8>, TsbError>;
    /// `POST /v1/sign`: files an approval request, returns its id.
    fn sign_asynchronous(&self, req: &SignRequest) -> Result<String, TsbError>;
    /// `GET /v1/request/{id}`.
    fn request_status(&self, id: &str) -> Result<RequestStatus, TsbError>;
    /// `DELETE /v1/request/{id}`.
    fn cancel_request(&self, id: &str) -> Result<(), TsbError>;
    /// Whether the TSB accepts this JWT (`C_Login` with `pinIs: token`).
    fn check_bearer(&self, jwt: &Secret) -> Result<(), TsbError>;
    /// Whether the TSB accepts this operation API key (`C_Login` with `pinIs: apiKey`).
    fn check_operation_api_key(&self, key: &Secret) -> Result<(), TsbError>;
    /// Sets (or clears) the JWT given at login.
    fn set_login_bearer(&self, jwt: Option<Secret>);
    /// Sets (or clears) the operation API key given at login.
    fn set_login_operation_key(&self, key: Option<Secret>);
    /// The JWT and the operation API key given at login (a forked child's new client takes
    /// them over).
    fn login_credentials(&self) -> (Option<Secret>, Option<Secret>);
    /// `POST /v1/key`: creates a key (C_GenerateKeyPair).
    fn create_key(&self, key: &NewKey<'_>) -> Result<(), TsbError>;
    /// Deletes a key (C_DestroyObject), with its password when it has one.
    fn delete_key(&self, label: &str, password: Option<&Secret>) -> Result<(), TsbError>;
}

/// Builds the backend of a process: called at `C_Initialize` and again in a child after `fork()`.
pub(crate) type BackendFactory =
    Box<dyn Fn(&Config) -> Result<Arc<dyn Backend>, TsbError> + Send + Sync>;

/// The factory of the real module: a TSB REST client (name lookups on a thread of their own
/// unless the application forbade threads, `CKF_LIBRARY_CANT_CREATE_OS_THREADS`).
pub(crate) fn tsb_factory(may_spawn_threads: bool) -> BackendFactory {
    Box::new(move |config| {
        let net = NetOptions::from_process(may_spawn_threads);
        Ok(Arc::new(TsbClient::with_net(config, net)?) as Arc<dyn Backend>)
    })
}

impl Backend for TsbClient {
    fn list_keys(&self) -> Result<Vec<String>, TsbError> {
        TsbClient::list_keys(self)
    }
    fn key_attributes(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<KeyAttributes, TsbError> {
        TsbClient::key_attributes(self, label, password)
    }
    fn certificate(&self, label: &str) -> Result<Option<Vec<u8>>, TsbError> {
        TsbClient::certificate(self, label)
    }
    fn import_certificate(&self, label: &str, der: &[u8]) -> Result<(), TsbError> {
        TsbClient::import_certificate(self, label, der)
    }
    fn delete_certificate(&self, label: &str) -> Result<(), TsbError> {
        TsbClient::delete_certificate(self, label)
    }
    fn sign_synchronous(
        &self,
        req: &SignRequest,
        check: &SignatureCheck<'_>,
    ) -> Result<Vec<u8>, TsbError> {
        TsbClient::sign_synchronous_checked(self, req, check)
    }
    fn sign_asynchronous(&self, req: &SignRequest) -> Result<String, TsbError> {
        TsbClient::sign_asynchronous(self, req)
    }
    fn request_status(&self, id: &str) -> Result<RequestStatus, TsbError> {
        TsbClient::request_status(self, id)
    }
    fn cancel_request(&self, id: &str) -> Result<(), TsbError> {
        TsbClient::cancel_request(self, id)
    }
    fn check_bearer(&self, jwt: &Secret) -> Result<(), TsbError> {
        TsbClient::check_bearer(self, jwt)
    }
    fn check_operation_api_key(&self, key: &Secret) -> Result<(), TsbError> {
        TsbClient::check_operation_api_key(self, key)
    }
    fn set_login_bearer(&self, jwt: Option<Secret>) {
        TsbClient::set_login_bearer(self, jwt)
    }
    fn set_login_operation_key(&self, key: Option<Secret>) {
        TsbClient::set_login_operation_key(self, key)
    }
    fn login_credentials(&self) -> (Option<Secret>, Option<Secret>) {
        TsbClient::login_credentials(self)
    }
    fn create_key(&self, key: &NewKey<'_>) -> Result<(), TsbError> {
        TsbClient::create_key(self, key)
    }
    fn delete_key(&self, label: &str, password: Option<&Secret>) -> Result<(), TsbError> {
        TsbClient::delete_key(self, label, password)
    }
}

//! An in-memory TSB for the core tests: real P-256 keys and signatures, approval requests whose
//! state the test drives, a log of every call, and switchable failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use parking_lot::Mutex;
use serde_json::json;

use crate::config::{Config, Secret};
use crate::token::{Backend, BackendFactory};
use crate::tsb::{KeyAttributes, RequestState, RequestStatus, SignRequest, TsbError, TsbErrorKind};

pub(super) struct FakeKey {
    pub(super) signer: SigningKey,
    pub(super) needs_approval: bool,
}

struct FakeRequest {
    state: RequestState,
    key: String,
    payload: Vec<u8>,
}

#[derive(Default)]
pub(super) struct FakeTsb {
    keys: Mutex<BTreeMap<String, FakeKey>>,
    requests: Mutex<HashMap<String, FakeRequest>>,
    calls: Mutex<Vec<String>>,
    /// The JWT `check_bearer` accepts.
    pub(super) good_jwt: Mutex<Option<String>>,
    /// The JWT set at login.
    pub(super) login_bearer: Mutex<Option<String>>,
}

pub(super) fn tsb_error(status: u16, code: i64) -> TsbError {
    TsbError::new(
        "fake",
        TsbErrorKind::Http {
            status,
            code: Some(code),
            reason: None,
            message: None,
        },
    )
}

impl FakeTsb {
    pub(super) fn new() -> Arc<FakeTsb> {
        Arc::new(FakeTsb::default())
    }

    /// A factory handing the token this fake (also after a "fork").
    pub(super) fn factory(self: &Arc<FakeTsb>) -> BackendFactory {
        let fake = self.clone();
        Box::new(move |_config: &Config| Ok(fake.clone() as Arc<dyn Backend>))
    }

    pub(super) fn add_key(&self, label: &str, needs_approval: bool) -> SigningKey {
        // A key derived from the label: deterministic, and different per label.
        let secret = <sha2::Sha256 as sha2::Digest>::digest(label.as_bytes());
        let signer = SigningKey::from_bytes(&secret).expect("a valid P-256 scalar");
        self.keys.lock().insert(
            label.to_string(),
            FakeKey {
                signer: signer.clone(),
                needs_approval,
            },
        );
        signer
    }

    pub(super) fn remove_key(&self, label: &str) {
        self.keys.lock().remove(label);
    }

    /// The calls made so far, as `name label-or-id`.
    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    pub(super) fn count(&self, prefix: &str) -> usize {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    fn record(&self, call: String) {
        self.calls.lock().push(call);
    }

    /// Executes an approval request: its result becomes the key's signature of the payload.
    pub(super) fn approve(&self, id: &str) {
        if let Some(r) = self.requests.lock().get_mut(id) {
            r.state = RequestState::Executed;
        }
    }

    pub(super) fn request_state(&self, id: &str) -> Option<RequestState> {
        self.requests.lock().get(id).map(|r| r.state.clone())
    }

    pub(super) fn request_ids(&self) -> Vec<String> {
        self.requests.lock().keys().cloned().collect()
    }

    fn signature(&self, label: &str, payload: &[u8]) -> Result<Vec<u8>, TsbError> {
        let keys = self.keys.lock();
        let key = keys.get(label).ok_or_else(|| tsb_error(404, 650))?;
        let sig: DerSignature = key.signer.sign(payload);
        Ok(sig.as_bytes().to_vec())
    }
}

impl Backend for FakeTsb {
    fn list_keys(&self) -> Result<Vec<String>, TsbError> {
        self.record("list".into());
        Ok(self.keys.lock().keys().cloned().collect())
    }

    fn key_attributes(
        &self,
        label: &str,
        _password: Option<&Secret>,
    ) -> Result<KeyAttributes, TsbError> {
        self.record(format!("attributes {label}"));
        let keys = self.keys.lock();
        let key = keys.get(label).ok_or_else(|| tsb_error(404, 650))?;
        let spki = key
            .signer
            .verifying_key()
            .to_public_key_der()
            .expect("SPKI");
        let policy = if key.needs_approval {
            json!({"ruleUse": {"tokens": [{"name": "t", "timelock": 0, "timeout": 0,
                "groups": [{"name": "g", "quorum": 1,
                    "approvals": [{"type": "public_key", "name": "alice", "value": "AA=="}]}]}]},
                "keyStatus": {"blocked": false}})
        } else {
            json!({"ruleUse": null, "keyStatus": {"blocked": false}})
        };
        let body = json!({"json": {
            "label": label,
            "id": null,
            "algorithm": "EC",
            "curveOid": "1.2.840.10045.3.1.7",
            "publicKey": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                spki.as_bytes()
            ),
            "attributes": {"sign": true, "decrypt": false, "unwrap": false, "derive": false,
                "sensitive": true, "alwaysSensitive": true, "extractable": false,
                "neverExtractable": true, "modifiable": false, "copyable": false,
                "destroyable": true},
            "policy": policy,
        }});
        Ok(crate::tsb::models::parse_key_attributes(&body).expect("fake attributes parse"))
    }

    fn certificate(&self, label: &str) -> Result<Option<Vec<u8>>, TsbError> {
        self.record(format!("certificate {label}"));
        Ok(None)
    }

    fn import_certificate(&self, label: &str, _der: &[u8]) -> Result<(), TsbError> {
        self.record(format!("import-certificate {label}"));
        Ok(())
    }

    fn delete_certificate(&self, label: &str) -> Result<(), TsbError> {
        self.record(format!("delete-certificate {label}"));
        Ok(())
    }

    fn sign_synchronous(&self, req: &SignRequest) -> Result<Vec<u8>, TsbError> {
        self.record(format!("sign {}", req.key));
        if self
            .keys
            .lock()
            .get(&req.key)
            .is_some_and(|k| k.needs_approval)
        {
            return Err(tsb_error(400, 401));
        }
        self.signature(&req.key, &req.payload)
    }

    fn sign_asynchronous(&self, req: &SignRequest) -> Result<String, TsbError> {
        self.record(format!("file {}", req.key));
        let mut requests = self.requests.lock();
        let id = format!("req-{}", requests.len() + 1);
        requests.insert(
            id.clone(),
            FakeRequest {
                state: RequestState::Pending,
                key: req.key.clone(),
                payload: req.payload.clone(),
            },
        );
        Ok(id)
    }

    fn request_status(&self, id: &str) -> Result<RequestStatus, TsbError> {
        self.record(format!("poll {id}"));
        let (state, key, payload) = {
            let requests = self.requests.lock();
            let r = requests.get(id).ok_or_else(|| tsb_error(404, 651))?;
            (r.state.clone(), r.key.clone(), r.payload.clone())
        };
        let result = match state {
            RequestState::Executed => Some(self.signature(&key, &payload)?),
            _ => None,
        };
        Ok(RequestStatus {
            state,
            approved_by: vec![],
            not_yet_approved_by: vec!["alice".into()],
            rejected_by: vec![],
            result,
        })
    }

    fn cancel_request(&self, id: &str) -> Result<(), TsbError> {
        self.record(format!("cancel {id}"));
        if let Some(r) = self.requests.lock().get_mut(id) {
            r.state = RequestState::Cancelled;
        }
        Ok(())
    }

    fn check_bearer(&self, jwt: &Secret) -> Result<(), TsbError> {
        self.record("check-bearer".into());
        match self.good_jwt.lock().as_deref() {
            Some(good) if good == jwt.expose() => Ok(()),
            _ => Err(tsb_error(401, 617)),
        }
    }

    fn check_operation_api_key(&self, _key: &Secret) -> Result<(), TsbError> {
        self.record("check-api-key".into());
        Err(tsb_error(401, 631))
    }

    fn set_login_bearer(&self, jwt: Option<Secret>) {
        *self.login_bearer.lock() = jwt.map(|s| s.expose().to_string());
    }

    fn set_login_operation_key(&self, _key: Option<Secret>) {}
    fn login_credentials(&self) -> (Option<Secret>, Option<Secret>) {
        (self.login_bearer.lock().clone().map(Secret::new), None)
    }
}

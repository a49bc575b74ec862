//! Authentication: JWT bearer token and API keys per role.

mod common;

use common::*;
use tsb_sim::{ApiKeys, AuthConfig};

fn api_keys_config() -> tsb_sim::SimConfig {
    let mut cfg = test_config();
    cfg.auth = AuthConfig {
        bearer_token: None,
        api_keys: ApiKeys {
            key_management: vec!["km-1".into(), "km-2".into()],
            key_operation: vec!["ko-1".into(), "ko-2".into()],
            service: vec!["svc-1".into()],
        },
    };
    cfg
}

fn get_with_key(base: &str, path: &str, key: Option<&str>) -> Resp {
    let mut http = Http::new(base);
    if let Some(k) = key {
        http = http.header("X-API-KEY", k);
    }
    http.get(path)
}

#[test]
fn api_keys_per_role() {
    let sim = start(api_keys_config());
    let base = sim.url();
    // Service role.
    assert_eq!(
        get_with_key(&base, "/v1/versionInfo", Some("svc-1")).status,
        200
    );
    for key in [None, Some("km-1"), Some("wrong")] {
        let r = get_with_key(&base, "/v1/versionInfo", key);
        assert_eq!((r.status, r.error_code()), (401, 631), "{key:?}");
        assert_eq!(r.json()["reason"], "res.error.invalid.api.key");
    }
    assert_eq!(
        get_with_key(&base, "/v1/licenseInfo", Some("svc-1")).status,
        200
    );
    assert_eq!(
        get_with_key(&base, "/v1/keystore/statistics", Some("svc-1")).status,
        200
    );
    // Key management role, both keys (rollover).
    for key in ["km-1", "km-2"] {
        assert_eq!(get_with_key(&base, "/v1/key", Some(key)).status, 200);
        assert_eq!(
            get_with_key(&base, "/v1/key/rsa-2048/attributes", Some(key)).status,
            200
        );
    }
    let r = get_with_key(&base, "/v1/key", Some("ko-1"));
    assert_eq!((r.status, r.error_code()), (401, 631));
    // Key operation role.
    for key in ["ko-1", "ko-2"] {
        let http = Http::new(&base).header("X-API-KEY", key);
        let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"auth");
        assert!(verify(
            &sim.public_key_der("ec-p256").unwrap(),
            "SHA256_WITH_ECDSA",
            b"auth",
            &sig,
            false
        ));
        let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"a"));
        assert_eq!(http.get(&format!("/v1/request/{id}")).status, 200);
        assert_eq!(http.get("/v1/certificate/ec-p256").status, 404);
    }
    let http = Http::new(&base).header("X-API-KEY", "km-1");
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x"),
    );
    assert_eq!((r.status, r.error_code()), (401, 631));
    let r = Http::new(&base).get("/v1/request/whatever");
    assert_eq!((r.status, r.error_code()), (401, 631));
    // Refused requests are counted, but no sign request is filed.
    assert!(sim.counter("POST /v1/synchronousSign") >= 3);
    assert_eq!(sim.requests().len(), 4);
    // The control interface needs no credentials.
    assert_eq!(Http::new(&base).get("/sim/counters").status, 200);
}

#[test]
fn roles_without_keys_are_open() {
    let mut cfg = api_keys_config();
    cfg.auth.api_keys.service.clear();
    let sim = start(cfg);
    assert_eq!(
        get_with_key(&sim.url(), "/v1/versionInfo", None).status,
        200
    );
    assert_eq!(get_with_key(&sim.url(), "/v1/key", None).status, 401);
}

#[test]
fn jwt_bearer_token() {
    let mut cfg = test_config();
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0c2Itc2ltIn0.c2lnbmF0dXJl";
    cfg.auth.bearer_token = Some(token.to_string());
    let sim = start(cfg);
    let base = sim.url();
    let r = Http::new(&base).get("/v1/key");
    assert_eq!((r.status, r.error_code()), (401, 617));
    assert_eq!(r.json()["reason"], "res.error.invalid.access.token");
    let r = Http::new(&base)
        .header("Authorization", "Bearer wrong")
        .get("/v1/key");
    assert_eq!((r.status, r.error_code()), (401, 617));
    let r = Http::new(&base)
        .header("Authorization", &format!("Basic {token}"))
        .get("/v1/versionInfo");
    assert_eq!(r.status, 401);
    let http = Http::new(&base).header("Authorization", &format!("Bearer {token}"));
    assert_eq!(http.get("/v1/key").status, 200);
    assert_eq!(http.get("/v1/versionInfo").status, 200);
    sign_sync(&http, "ed25519", "EDDSA", b"jwt");
}

#[test]
fn jwt_and_api_keys_combined() {
    let mut cfg = api_keys_config();
    cfg.auth.bearer_token = Some("tok".into());
    let sim = start(cfg);
    let base = sim.url();
    let r = Http::new(&base).header("X-API-KEY", "km-1").get("/v1/key");
    assert_eq!((r.status, r.error_code()), (401, 617), "token missing");
    let r = Http::new(&base)
        .header("Authorization", "Bearer tok")
        .get("/v1/key");
    assert_eq!((r.status, r.error_code()), (401, 631), "API key missing");
    let r = Http::new(&base)
        .header("Authorization", "Bearer tok")
        .header("X-API-KEY", "km-2")
        .get("/v1/key");
    assert_eq!(r.status, 200);
}

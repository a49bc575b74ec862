//! X.509 certificates (`Certificate::from_any`: DER or PEM) and PEM chains: no panic; a parsed
//! certificate's own DER parses to the same certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsb_pkcs11::fuzzing::Certificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Certificate::from_any(data) {
        let again = Certificate::from_der(&c.der).expect("own DER parses");
        assert_eq!(again.der, c.der);
        let _ = c.check_value();
    }
    if let Ok(chain) = Certificate::chain_from_pem(data) {
        assert!(!chain.is_empty());
    }
});

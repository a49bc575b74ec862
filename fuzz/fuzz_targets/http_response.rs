//! The TSB client's HTTP/1.1 response reader (`tsb::http`): status lines, headers, bodies sized
//! by Content-Length, chunked or read to the end, 1xx interim responses, and several responses
//! back to back on one kept-alive connection. No panic; a body is never longer than the limit
//! the reader is given; the responses never use more bytes than there are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsb_pkcs11::fuzzing::http_responses;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the body limit (small limits reach the truncation paths).
    let Some((&limit, bytes)) = data.split_first() else {
        return;
    };
    let max_body = if limit == 0xff {
        4 << 20
    } else {
        limit as usize * 4
    };
    let responses = http_responses(bytes, max_body);
    assert!(!responses.is_empty());
    let used: usize = responses.iter().map(|(_, n)| n).sum();
    assert!(used <= bytes.len());
    for (parsed, _) in &responses {
        if let Ok((status, body, ..)) = parsed {
            // Three digits (interim 1xx responses are skipped).
            assert!(*status < 1000 && !(100..200).contains(status));
            assert!(body.len() <= max_body);
        }
    }
});

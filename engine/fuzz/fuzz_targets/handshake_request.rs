//! Raw bytes as an upgrade request: parse, validate, answer. Nothing may panic, and
//! whatever the server writes back must read as one complete response head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::proto::handshake::{self, Limits, ServerOptions};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let request = match handshake::parse_request(data, &limits) {
        Ok(Some((request, len))) => {
            assert!(len <= data.len().min(limits.max_head_bytes));
            request
        }
        Ok(None) => return,
        Err(err) => {
            assert!(matches!(err.status(), 400 | 431));
            return;
        }
    };
    let _ = handshake::is_websocket_upgrade(&request);
    let _ = handshake::subprotocols(&request);
    let _ = handshake::check_same_origin(&request);
    let supported = ["chat".to_owned(), "superchat".to_owned()];
    let options = ServerOptions {
        subprotocols: &supported,
        enable_compression: true,
        check_origin: None,
    };
    let mut out = Vec::new();
    match handshake::validate_request(&request, &options) {
        Ok(accepted) => handshake::write_response(&accepted, &[], &mut out),
        Err(err) => handshake::write_error_response(&err, &mut out),
    }
    let answer = handshake::parse_response(&out, &limits);
    assert!(matches!(answer, Ok(Some(_))), "unreadable answer {out:?}");
});

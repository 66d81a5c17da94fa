//! Raw bytes as the server's answer to a client offering subprotocols and
//! permessage-deflate: parse and validate. Nothing may panic, and every failure keeps
//! the response it judged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::proto::handshake::{self, ClientRequest, Limits};

fuzz_target!(|data: &[u8]| {
    let response = match handshake::parse_response(data, &Limits::default()) {
        Ok(Some((response, len))) => {
            assert!(len <= data.len());
            assert!(response.body.len() <= 1024);
            response
        }
        Ok(None) | Err(_) => return,
    };
    let offered = ["chat".to_owned(), "superchat".to_owned()];
    let request = ClientRequest {
        host: "example.com",
        target: "/",
        key: "dGhlIHNhbXBsZSBub25jZQ==",
        subprotocols: &offered,
        enable_compression: true,
        extra_headers: &[],
    };
    if let Err(err) = handshake::validate_response(&response, &request) {
        assert_eq!(err.response(), Some(&response));
    }
});

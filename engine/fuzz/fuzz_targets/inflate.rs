//! Raw bytes as a compressed message payload: inflate with a small read limit. Nothing
//! may panic and the output never exceeds the limit, however the stream expands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::proto::deflate::Inflater;
use ringcast::proto::ProtocolError;

const LIMIT: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut inflater = Inflater::new();
    match inflater.inflate(data, LIMIT) {
        Ok(message) => assert!(message.len() as u64 <= LIMIT),
        Err(err) => assert!(matches!(
            err,
            ProtocolError::MessageTooBig { limit: LIMIT } | ProtocolError::BadDeflateStream
        )),
    }
});

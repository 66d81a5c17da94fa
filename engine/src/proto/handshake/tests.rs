//! One test per handshake rule, both sides, and the inputs that broke other libraries.

use super::*;

const CHROME: &str = "GET /chat?room=lobby HTTP/1.1\r\nHost: example.com:8080\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nUpgrade: websocket\r\nOrigin: http://example.com:8080\r\nSec-WebSocket-Version: 13\r\n\
User-Agent: Mozilla/5.0\r\nAccept-Encoding: gzip, deflate, br\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn parse(text: &str) -> Request {
    parse_request(text.as_bytes(), &Limits::default())
        .unwrap()
        .unwrap()
        .0
}

fn options() -> ServerOptions<'static> {
    ServerOptions {
        subprotocols: &[],
        enable_compression: false,
        check_origin: None,
    }
}

fn with_header(name: &str, value: &str) -> Request {
    let mut request = parse(CHROME);
    request
        .headers
        .retain(|h| !h.name.eq_ignore_ascii_case(name));
    if !value.is_empty() {
        request.headers.push(Header {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        });
    }
    request
}

#[test]
fn rfc_key_gives_rfc_accept() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn chrome_request_is_accepted() {
    let request = parse(CHROME);
    assert_eq!(
        (request.path(), request.query()),
        ("/chat", Some("room=lobby"))
    );
    assert!(is_websocket_upgrade(&request));
    let accepted = validate_request(&request, &options()).unwrap();
    assert_eq!(accepted.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(accepted.compression, None);
}

#[test]
fn version_other_than_13_gets_426_with_version_header() {
    let err = validate_request(&with_header("Sec-WebSocket-Version", "8"), &options()).unwrap_err();
    assert_eq!(err.status(), 426);
    let mut out = Vec::new();
    write_error_response(&err, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
}

#[test]
fn key_of_15_bytes_is_rejected() {
    // base64 of 15 bytes is 20 characters.
    let err = validate_request(
        &with_header("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"),
        &options(),
    )
    .unwrap_err();
    assert_eq!(err.status(), 400);
    let err = validate_request(&with_header("Sec-WebSocket-Key", ""), &options()).unwrap_err();
    assert_eq!(err.status(), 400);
}

#[test]
fn method_other_than_get_is_405() {
    let mut request = parse(CHROME);
    request.method = "POST".into();
    assert_eq!(
        validate_request(&request, &options()).unwrap_err().status(),
        405
    );
}

#[test]
fn http_1_0_is_rejected() {
    let mut request = parse(CHROME);
    request.version = 0;
    assert_eq!(
        validate_request(&request, &options()).unwrap_err().status(),
        400
    );
}

#[test]
fn missing_upgrade_token_is_rejected() {
    assert_eq!(
        validate_request(&with_header("Upgrade", "h2c"), &options())
            .unwrap_err()
            .status(),
        400
    );
    assert_eq!(
        validate_request(&with_header("Connection", "keep-alive"), &options())
            .unwrap_err()
            .status(),
        400
    );
}

#[test]
fn connection_token_list_containing_upgrade_is_accepted() {
    let request = with_header("Connection", "keep-alive, Upgrade");
    assert!(validate_request(&request, &options()).is_ok());
    assert!(validate_request(&with_header("Upgrade", "WebSocket"), &options()).is_ok());
}

#[test]
fn origin_with_other_host_is_403() {
    let err =
        validate_request(&with_header("Origin", "http://evil.example"), &options()).unwrap_err();
    assert_eq!(err.status(), 403);
    assert!(validate_request(
        &with_header("Origin", "HTTP://EXAMPLE.COM:8080"),
        &options()
    )
    .is_ok());
}

#[test]
fn absent_origin_is_accepted() {
    assert!(validate_request(&with_header("Origin", ""), &options()).is_ok());
}

#[test]
fn settable_origin_check_decides() {
    let allow_all = |_: &Request| true;
    let options = ServerOptions {
        check_origin: Some(&allow_all),
        ..options()
    };
    assert!(validate_request(&with_header("Origin", "http://evil.example"), &options).is_ok());
}

#[test]
fn subprotocol_chosen_in_server_order() {
    let request = with_header("Sec-WebSocket-Protocol", "chat.v1, chat.v2");
    let ours = vec!["chat.v2".to_string(), "chat.v1".to_string()];
    let options = ServerOptions {
        subprotocols: &ours,
        ..options()
    };
    assert_eq!(
        validate_request(&request, &options)
            .unwrap()
            .subprotocol
            .as_deref(),
        Some("chat.v2")
    );
}

#[test]
fn protocol_header_padded_with_spaces_is_trimmed() {
    let padded = format!("{}chat{}", " ".repeat(5000), " ".repeat(5000));
    let request = with_header("Sec-WebSocket-Protocol", &padded);
    assert_eq!(subprotocols(&request), vec!["chat".to_string()]);
}

#[test]
fn compression_is_negotiated_when_enabled() {
    let options = ServerOptions {
        enable_compression: true,
        ..options()
    };
    let accepted = validate_request(&parse(CHROME), &options).unwrap();
    let mut out = Vec::new();
    write_response(&accepted, &[("Set-Cookie".into(), "a=b".into())], &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(text.contains(
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
    ));
    assert!(text.contains("Set-Cookie: a=b\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
}

#[test]
fn extra_header_with_line_break_is_dropped() {
    let accepted = validate_request(&parse(CHROME), &options()).unwrap();
    let mut out = Vec::new();
    write_response(
        &accepted,
        &[("X".into(), "a\r\nInjected: yes".into())],
        &mut out,
    );
    assert!(!String::from_utf8(out).unwrap().contains("Injected"));
}

#[test]
fn head_fed_one_byte_at_a_time_parses() {
    let bytes = CHROME.as_bytes();
    for end in 0..bytes.len() {
        assert_eq!(
            parse_request(&bytes[..end], &Limits::default()).unwrap(),
            None,
            "at {end}"
        );
    }
    let (request, used) = parse_request(bytes, &Limits::default()).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(request.method, "GET");
}

#[test]
fn bytes_after_the_head_are_not_consumed() {
    let mut bytes = CHROME.as_bytes().to_vec();
    bytes.extend_from_slice(b"\x81\x85frame");
    let (_, used) = parse_request(&bytes, &Limits::default()).unwrap().unwrap();
    assert_eq!(used, CHROME.len());
}

#[test]
fn request_over_max_head_bytes_gets_431() {
    let mut text = String::from("GET / HTTP/1.1\r\nX-Long: ");
    text.push_str(&"a".repeat(20_000));
    let err = parse_request(text.as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(err.status(), 431);
}

#[test]
fn more_than_2000_headers_gets_431() {
    let mut text = String::from("GET / HTTP/1.1\r\n");
    for i in 0..2001 {
        text.push_str(&format!("X{i}: y\r\n"));
    }
    text.push_str("\r\n");
    let limits = Limits {
        max_head_bytes: 1 << 20,
        ..Limits::default()
    };
    assert_eq!(
        parse_request(text.as_bytes(), &limits)
            .unwrap_err()
            .status(),
        431
    );
}

#[test]
fn malformed_request_gets_400() {
    let err = parse_request(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", &Limits::default()).unwrap_err();
    assert_eq!(err.status(), 400);
}

fn client_request<'a>(
    key: &'a str,
    protocols: &'a [String],
    compression: bool,
) -> ClientRequest<'a> {
    ClientRequest {
        host: "example.com",
        target: "/chat",
        key,
        subprotocols: protocols,
        enable_compression: compression,
        extra_headers: &[],
    }
}

fn response(text: &str) -> Response {
    parse_response(text.as_bytes(), &Limits::default())
        .unwrap()
        .unwrap()
        .0
}

#[test]
fn client_request_is_accepted_by_the_server_side() {
    let key = generate_key();
    let protocols = vec!["chat".to_string()];
    let mut out = Vec::new();
    write_request(&client_request(&key, &protocols, true), &mut out);
    let request = parse_request(&out, &Limits::default()).unwrap().unwrap().0;
    let options = ServerOptions {
        subprotocols: &protocols,
        enable_compression: true,
        check_origin: None,
    };
    let accepted = validate_request(&request, &options).unwrap();
    let mut answer = Vec::new();
    write_response(&accepted, &[], &mut answer);
    let response = parse_response(&answer, &Limits::default())
        .unwrap()
        .unwrap()
        .0;
    let agreed = validate_response(&response, &client_request(&key, &protocols, true)).unwrap();
    assert_eq!(agreed.subprotocol.as_deref(), Some("chat"));
    assert!(agreed.compression.is_some());
}

const GOOD: &str =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

#[test]
fn wrong_accept_is_bad_handshake_with_response() {
    let text = GOOD.replace("s3pP", "xxxx") + "\r\n";
    let err = validate_response(
        &response(&text),
        &client_request("dGhlIHNhbXBsZSBub25jZQ==", &[], false),
    )
    .unwrap_err();
    assert_eq!(err.response().map(|r| r.status), Some(101));
}

#[test]
fn unoffered_subprotocol_is_bad_handshake() {
    let text = format!("{GOOD}Sec-WebSocket-Protocol: other\r\n\r\n");
    let offered = vec!["chat".to_string()];
    assert!(validate_response(
        &response(&text),
        &client_request("dGhlIHNhbXBsZSBub25jZQ==", &offered, false)
    )
    .is_err());
}

#[test]
fn unoffered_extension_is_bad_handshake() {
    let text = format!(
        "{GOOD}Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
    );
    assert!(validate_response(
        &response(&text),
        &client_request("dGhlIHNhbXBsZSBub25jZQ==", &[], false)
    )
    .is_err());
    assert!(validate_response(
        &response(&text),
        &client_request("dGhlIHNhbXBsZSBub25jZQ==", &[], true)
    )
    .is_ok());
}

#[test]
fn invalid_deflate_answer_is_bad_handshake() {
    let text = format!(
        "{GOOD}Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99\r\n\r\n"
    );
    assert!(validate_response(
        &response(&text),
        &client_request("dGhlIHNhbXBsZSBub25jZQ==", &[], true)
    )
    .is_err());
}

#[test]
fn non_101_keeps_status_headers_and_body() {
    let mut resp =
        response("HTTP/1.1 403 Forbidden\r\nX-Reason: nope\r\nContent-Length: 4\r\n\r\n");
    resp.body = b"nope".to_vec();
    let err = validate_response(
        &resp,
        &client_request("dGhlIHNhbXBsZSBub25jZQ==", &[], false),
    )
    .unwrap_err();
    assert_eq!(err.status(), 403);
    let kept = err.response().unwrap();
    assert_eq!(
        (kept.header("x-reason"), kept.body.as_slice()),
        (Some(&b"nope"[..]), &b"nope"[..])
    );
}

#[test]
fn method_not_allowed_lists_get() {
    let mut out = Vec::new();
    write_error_response(
        &HandshakeError::new(405, "request method is not GET"),
        &mut out,
    );
    assert!(String::from_utf8(out).unwrap().contains("Allow: GET\r\n"));
}

#[test]
fn request_line_cannot_be_broken_by_the_target() {
    let mut out = Vec::new();
    let mut request = client_request("dGhlIHNhbXBsZSBub25jZQ==", &[], false);
    request.target = "/a b\r\nInjected: yes";
    write_request(&request, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("GET /a%20b%0D%0AInjected:%20yes HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(!text.contains("\r\nInjected"));
}

fn offering(protocols: &str) -> Request {
    with_header("Sec-WebSocket-Protocol", protocols)
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn response_protocol_header_contradicting_the_negotiated_one_is_a_500() {
    let request = offering("v1, v2");
    let ours = ["v2".to_string()];
    let options = ServerOptions {
        subprotocols: &ours,
        ..options()
    };
    let mut accepted = validate_request(&request, &options).unwrap();
    assert_eq!(accepted.subprotocol.as_deref(), Some("v2"));
    let extra = headers(&[("Sec-WebSocket-Protocol", "v1")]);
    let err = check_response_headers(&mut accepted, &request, &options, &extra).unwrap_err();
    assert_eq!(err.status(), 500);
    assert!(err.message().contains("contradicts"), "{}", err.message());
    // Naming the negotiated one is no contradiction, and it is written once.
    let extra = headers(&[("Sec-WebSocket-Protocol", "v2")]);
    check_response_headers(&mut accepted, &request, &options, &extra).unwrap();
    let mut out = Vec::new();
    write_response(&accepted, &extra, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("Sec-WebSocket-Protocol").count(), 1, "{text}");
}

#[test]
fn response_protocol_header_when_none_was_negotiated_is_a_500() {
    let request = offering("v1");
    let ours = ["v9".to_string()];
    let options = ServerOptions {
        subprotocols: &ours,
        ..options()
    };
    let mut accepted = validate_request(&request, &options).unwrap();
    let extra = headers(&[("Sec-WebSocket-Protocol", "v1")]);
    let err = check_response_headers(&mut accepted, &request, &options, &extra).unwrap_err();
    assert_eq!(err.status(), 500);
}

#[test]
fn application_may_choose_an_offered_subprotocol_when_the_server_lists_none() {
    let request = offering("v1, v2");
    let mut accepted = validate_request(&request, &options()).unwrap();
    let extra = headers(&[("Sec-WebSocket-Protocol", "v2")]);
    check_response_headers(&mut accepted, &request, &options(), &extra).unwrap();
    assert_eq!(accepted.subprotocol.as_deref(), Some("v2"));
    // One the client did not offer is refused.
    let mut accepted = validate_request(&request, &options()).unwrap();
    let extra = headers(&[("Sec-WebSocket-Protocol", "v3")]);
    let err = check_response_headers(&mut accepted, &request, &options(), &extra).unwrap_err();
    assert_eq!(err.status(), 500);
}

#[test]
fn response_headers_the_handshake_owns_or_that_break_lines_are_a_500() {
    let request = parse(CHROME);
    for (name, value) in [
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Upgrade", "websocket"),
        ("sec-websocket-accept", "x"),
        ("Set-Cookie", "a=b\r\nX-Injected: yes"),
        ("Bad Name", "x"),
    ] {
        let mut accepted = validate_request(&request, &options()).unwrap();
        let extra = headers(&[(name, value)]);
        let err =
            check_response_headers(&mut accepted, &request, &options(), &extra).expect_err(name);
        assert_eq!(err.status(), 500, "{name}");
    }
    let mut accepted = validate_request(&request, &options()).unwrap();
    let extra = headers(&[("Set-Cookie", "session=1; Path=/")]);
    check_response_headers(&mut accepted, &request, &options(), &extra).unwrap();
}

#[test]
fn error_response_counts_its_body_and_adds_what_the_status_requires() {
    let mut out = Vec::new();
    ErrorResponse::text(405, "GET only")
        .header("Content-Length", "999")
        .header("X-Trace", "7")
        .write(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nContent-Length: 8\r\n"), "{text}");
    assert!(
        !text.contains("999"),
        "the length is ringcast's to write: {text}"
    );
    assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
    assert!(text.contains("\r\nX-Trace: 7\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nGET only"), "{text}");
}

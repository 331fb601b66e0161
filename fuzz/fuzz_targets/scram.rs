//! Fuzz the pure authentication code: SCRAM server and client state machines,
//! the verifier parser, and MD5 verification. Nothing here may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::protocol::md5::{md5_salted_from_hash, md5_verify};
use shardbouncer::protocol::scram::{ScramClient, ScramServer, ScramVerifier};

fuzz_target!(|data: &[u8]| {
    // Split the input in two messages at the first NUL (or use all of it twice).
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };

    // Verifier parser (and format round trip when it parses).
    let text = String::from_utf8_lossy(data);
    if let Some(v) = ScramVerifier::parse(&text) {
        assert_eq!(ScramVerifier::parse(&v.to_string_form()), Some(v));
    }

    let verifier = ScramVerifier {
        iterations: 4096,
        salt: b"fuzzsalt".to_vec(),
        stored_key: [1; 32],
        server_key: [2; 32],
    };

    // Server: arbitrary client-first then arbitrary client-final.
    let mut server = ScramServer::new(verifier.clone(), "srvnonce".to_string());
    let _ = server.handle_client_first(first);
    let _ = server.handle_client_final(second);
    let _ = server.client_key();

    // Server: valid client-first, arbitrary client-final (reaches proof checks).
    let mut server = ScramServer::new(verifier, "srvnonce".to_string());
    if server.handle_client_first(b"n,,n=,r=cli").is_ok() {
        let _ = server.handle_client_final(data);
    }

    // Client: arbitrary server-first then arbitrary server-final. Iterations are
    // capped low so a fuzzed "i=9999999" does not turn into a slow unit.
    let mut client = ScramClient::with_keys([3; 32], [4; 32], "cli".to_string());
    client.set_max_iterations(64);
    let _ = client.client_first();
    let _ = client.handle_server_first(first);
    let _ = client.verify_server_final(second);

    let mut client = ScramClient::new("pw", "cli".to_string());
    client.set_max_iterations(64);
    let _ = client.handle_server_first(first);
    let _ = client.verify_server_final(second);

    // MD5.
    let salt = [data.first().copied().unwrap_or(0), 1, 2, 3];
    let _ = md5_salted_from_hash(&text, salt);
    let _ = md5_verify("user", &text, salt, second);
});

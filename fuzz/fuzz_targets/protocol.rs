//! Fuzz the wire-protocol codec: framing, startup packets, libpq `options`,
//! the Parse/Bind views, ErrorResponse/ParameterStatus/DataRow decoding, and
//! builder -> decoder round trips. Every input is fed to every decoder, since
//! they all take untrusted bytes straight off a socket.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardbouncer::protocol::{
    self, frame_header, parse_error, parse_startup, startup::parse_options, Bind, FrameError,
    Parse, StartupPacket, HEADER_LEN,
};
use shardbouncer::protocol::{parse_data_row as decode_data_row, parse_parameter_status};

/// Walk `buf` as a stream of regular frames, like the session loops do.
fn walk_frames(buf: &[u8], max: usize) {
    let mut pos = 0;
    for _ in 0..10_000 {
        match frame_header(&buf[pos..], max) {
            Ok(None) => {
                assert!(buf.len() - pos < HEADER_LEN);
                return;
            }
            Ok(Some((tag, len))) => {
                assert_eq!(tag, buf[pos]);
                assert!(len >= HEADER_LEN, "frame shorter than its header: {len}");
                assert!(len <= max, "frame {len} above max {max}");
                if buf.len() - pos < len {
                    return; // incomplete: would wait for more bytes
                }
                decode_frame(tag, &buf[pos + HEADER_LEN..pos + len]);
                pos += len;
            }
            Err(FrameError::BadLength(l)) => {
                assert!(l < 4);
                return;
            }
            Err(FrameError::TooLarge { len, max: m }) => {
                assert!(len > m);
                return;
            }
            Err(e @ FrameError::TooLargeForType { .. }) => {
                panic!("frame_header knows no types: {e}")
            }
        }
    }
}

/// Hand a complete frame body to the view that the tag selects.
fn decode_frame(tag: u8, body: &[u8]) {
    match tag {
        b'P' => parse_view(body),
        b'B' => bind_view(body),
        b'E' | b'N' => {
            let _ = parse_error(body);
        }
        b'S' => {
            let _ = parse_parameter_status(body);
        }
        b'D' => {
            let _ = decode_data_row(body);
        }
        _ => {}
    }
}

fn parse_view(body: &[u8]) {
    if let Some(p) = Parse::parse(body) {
        assert!(p.name.len() + p.query.len() + p.param_types.len() + 4 <= body.len());
        assert_eq!(p.param_types.len() % 4, 0);
        let n = p.param_types.len() / 4;
        for i in [0, 1, 2, n.saturating_sub(1), n, n + 1, 40_000] {
            assert_eq!(p.param_type(i).is_some(), i < n);
        }
    }
}

fn bind_view(body: &[u8]) {
    if let Some(b) = Bind::parse(body) {
        let n = b.param_count();
        // Callers only ask for indices below the i16 parameter count limit.
        for i in [0, 1, 2, 7, n.saturating_sub(1), n, n + 1, 40_000] {
            let _ = b.format(i);
            match b.param(i) {
                Some(Some(v)) => {
                    assert!(i < n);
                    assert!(v.len() <= body.len());
                }
                Some(None) => assert!(i < n),
                None => {}
            }
        }
        assert!(b.param(n).is_none());
    }
}

fn startup(body: &[u8]) {
    if let Ok(StartupPacket::Startup { params, .. }) = parse_startup(body) {
        for (k, v) in &params {
            assert!(!k.is_empty());
            assert!(!k.contains('\0') && !v.contains('\0'));
            if k == "options" {
                let _ = parse_options(v);
            }
        }
        // Rebuilding the packet must decode to the same parameters.
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut out = BytesMut::new();
        protocol::startup_message(&mut out, &pairs);
        match parse_startup(&out[4..]) {
            Ok(StartupPacket::Startup { params: again, .. }) => assert_eq!(again, params),
            other => panic!("startup round trip: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Framing, as a client or server byte stream, with a small and a huge limit.
    walk_frames(data, 64);
    walk_frames(data, usize::MAX >> 1);

    // Every view also gets the raw bytes as a body.
    parse_view(data);
    bind_view(data);
    let _ = parse_error(data);
    let _ = parse_parameter_status(data);
    let _ = decode_data_row(data);

    // Startup-phase packet body (after the 4-byte length).
    startup(data);

    // libpq options string.
    let text = String::from_utf8_lossy(data);
    if let Ok(opts) = parse_options(&text) {
        for (k, _) in &opts {
            assert!(!k.contains('-'));
        }
    }

    // Builder -> decoder round trips with fuzzed text.
    let (a, b) = text.split_at(text.char_indices().nth(5).map_or(text.len(), |(i, _)| i));
    let mut buf = BytesMut::new();
    protocol::error_response(&mut buf, a, b);
    match frame_header(&buf, usize::MAX >> 1) {
        Ok(Some((b'E', len))) => assert_eq!(len, buf.len()),
        other => panic!("error_response framing: {other:?}"),
    }
    let info = parse_error(&buf[HEADER_LEN..]);
    assert_eq!(info.severity, "ERROR");
    assert_eq!(info.code, a.replace('\0', ""));
    assert_eq!(info.message, b.replace('\0', ""));

    buf.clear();
    let vals: Vec<Option<&str>> = text
        .split(',')
        .take(1000)
        .map(|s| (s != "NULL").then_some(s))
        .collect();
    protocol::data_row(&mut buf, &vals);
    assert_eq!(
        frame_header(&buf, usize::MAX >> 1),
        Ok(Some((b'D', buf.len())))
    );
    let decoded = decode_data_row(&buf[HEADER_LEN..]);
    assert_eq!(decoded.len(), vals.len());
    for (d, v) in decoded.iter().zip(&vals) {
        assert_eq!(d.as_deref(), *v);
    }

    buf.clear();
    protocol::parameter_status(&mut buf, a, b);
    let (k, v) = parse_parameter_status(&buf[HEADER_LEN..]).expect("own ParameterStatus");
    assert_eq!(
        (k, v),
        (a.replace('\0', "").as_str(), b.replace('\0', "").as_str())
    );
});

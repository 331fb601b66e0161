//! The rows of a `COPY .. FROM STDIN` read for their key
//! (`router::copy::CopyReader`), in the text, CSV and binary formats, with
//! options from the input.
//!
//! Invariants:
//! * never a panic, whatever the data;
//! * the rows read do not depend on how the data is split into CopyData
//!   messages: the whole at once and the same bytes in pieces (cut where
//!   the input says) give the same rows, in the same order, with the same
//!   numbers, and the same result at the end;
//! * row numbers grow by one from 1; a value is never longer than the
//!   field limit; a text or CSV value holds no byte the data does not (an
//!   escape gives one byte: `\t`, `\x41`, `\101` are bytes of the text
//!   format's own making).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::router::copy::{copy_in, CopyIn, CopyReader, CopyValue, Format, MAX_FIELD};

const STATEMENTS: [&str; 8] = [
    "COPY t (a, tenant_id) FROM STDIN",
    "COPY t (tenant_id, a) FROM STDIN (FORMAT csv)",
    "COPY t (a, tenant_id) FROM STDIN (FORMAT csv, HEADER, QUOTE '''', ESCAPE '\\')",
    "COPY t (a, b, tenant_id) FROM STDIN WITH DELIMITER '|' NULL 'x'",
    "COPY t (tenant_id) FROM STDIN (FORMAT binary)",
    "COPY t (a, tenant_id) FROM STDIN (FORMAT binary)",
    "COPY t (a, tenant_id) FROM STDIN (HEADER, DELIMITER ',')",
    "COPY t (tenant_id, a) FROM STDIN CSV FORCE NOT NULL tenant_id",
];

/// Every row read from `chunks`, in order, as (number, value), and
/// whether the end was read.
fn read(r: &mut CopyReader, chunks: &[&[u8]]) -> Vec<(u64, Option<Vec<u8>>, u8)> {
    let mut out = Vec::new();
    let mut push = |n: u64, v: CopyValue<'_>| -> Result<(), ()> {
        out.push(match v {
            CopyValue::Text(t) => (n, Some(t.to_vec()), 0),
            CopyValue::Binary(b) => (n, Some(b.to_vec()), 1),
            CopyValue::Null => (n, None, 2),
            CopyValue::Unreadable(_) => (n, None, 3),
        });
        Ok(())
    };
    for c in chunks {
        r.feed(c, &mut push).unwrap();
    }
    r.finish(&mut push).unwrap();
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let Some((&cuts, data)) = rest.split_first() else {
        return;
    };
    let sql = STATEMENTS[pick as usize % STATEMENTS.len()];
    let CopyIn::Rows(f) = copy_in(sql.as_bytes(), b"tenant_id", true) else {
        panic!("{sql} is read");
    };
    let whole = read(&mut CopyReader::new(&f), &[data]);
    // The same bytes cut into pieces: every `cuts`-th byte (1 to 16) ends
    // one, and every empty piece between is sent too.
    let step = (cuts as usize % 16) + 1;
    let pieces: Vec<&[u8]> = data.chunks(step).flat_map(|c| [c, &c[..0]]).collect();
    let split = read(&mut CopyReader::new(&f), &pieces);
    assert_eq!(whole, split, "{sql}: split every {step}");
    let mut last = 0;
    for (n, v, kind) in &whole {
        assert!(*n > last, "{sql}: row numbers grow: {whole:?}");
        last = *n;
        if let Some(v) = v {
            assert!(v.len() <= MAX_FIELD, "{sql}: a value past the limit");
            assert_eq!(*kind == 1, f.format == Format::Binary, "{sql}");
            if f.format == Format::Csv {
                assert!(
                    v.iter().all(|b| data.contains(b)),
                    "{sql}: a CSV value's bytes are the data's"
                );
            }
        }
    }
});

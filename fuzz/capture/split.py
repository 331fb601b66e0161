"""Cut recorded client bytes (proxy.py output) into fuzz seeds.

    python3 split.py RAW_DIR SEEDS_DIR

For each recording LABEL-N.bin (one client connection) it writes, deduplicated
by content:

* protocol/   every message (tag, length, body); startup packet bodies (after the
              length word, as the target's startup decoder takes them); the
              session's message stream (up to 16 KiB);
* wire_diff/  every message; whole startup packets (length word included); the
              stream after login;
* scanner/    every SQL text of a Query or Parse;
* session/    the connection's messages as the session target's op encoding (see
              fuzz_targets/session.rs), two connections interleaved when the
              recording has two, a server turn after each Sync and Query.
"""

import hashlib
import os
import re
import struct
import sys
from collections import defaultdict

SSL, GSS, CANCEL = 80877103, 80877104, 80877102


def parse(raw):
    """(startup packets, [(tag, frame)]) of one connection's client bytes."""
    packets, frames, i = [], [], 0
    while i + 8 <= len(raw):
        (n,) = struct.unpack_from("!i", raw, i)
        (code,) = struct.unpack_from("!i", raw, i + 4)
        packets.append(raw[i : i + n])
        i += n
        if code not in (SSL, GSS):
            break
    while i + 5 <= len(raw):
        (n,) = struct.unpack_from("!i", raw, i + 1)
        frames.append((raw[i : i + 1], raw[i : i + 1 + n]))
        i += 1 + n
    return packets, frames


def cstr(b, i):
    j = b.index(b"\0", i)
    return b[i:j], j + 1


def sql_of(tag, frame):
    body = frame[5:]
    try:
        if tag == b"Q":
            return cstr(body, 0)[0]
        if tag == b"P":
            _, i = cstr(body, 0)
            return cstr(body, i)[0]
    except ValueError:
        pass
    return None


# fuzz_targets/session.rs: SQL[] and the message kinds picked by op[0] % 12.
KIND = {b"Q": 0, b"P": 2, b"B": 3, b"E": 4, b"S": 5, b"H": 6, b"D": 7, b"C": 8,
        b"d": 9, b"c": 10, b"F": 11}


def sql_index(sql):
    s = sql.decode("utf-8", "replace").strip()
    u = s.upper()
    if not s:
        return 18
    if ";" in s.rstrip(";"):
        return 19
    for prefix, idx in (("BEGIN", 1), ("START", 1), ("COMMIT", 2), ("END", 2),
                        ("ROLLBACK TO", 17), ("SAVEPOINT", 17), ("RELEASE", 17),
                        ("ROLLBACK", 3), ("SET LOCAL", 6), ("SET TENANT_ID", 10),
                        ("SET", 5), ("RESET", 5), ("COPY", 12), ("DISCARD", 13),
                        ("DEALLOCATE", 14), ("SHOW", 16)):
        if u.startswith(prefix):
            return idx
    if "NO_SUCH" in u or "BROKEN" in u or "1/0" in u:
        return 4
    if u.startswith("/*") and "TENANT_ID" in u:
        return 15
    m = re.search(r"TENANT_ID\s*=\s*(\$?)(\d+)", u)
    if m:
        return 9 if m.group(1) else 7 + int(m.group(2)) % 2
    if "$1" in s:
        return 9
    return 0


def ops_of(frames, client, names):
    """Units of 4-byte ops for one connection: each unit ends at Sync/Query."""
    units, cur = [], []
    for tag, frame in frames:
        if tag not in KIND or tag == b"X":
            continue
        body = frame[5:]
        sql = sql_of(tag, frame)
        name = b""
        try:
            if tag == b"P":
                name = cstr(body, 0)[0]
            elif tag == b"B":
                name = cstr(body, cstr(body, 0)[1])[0]
            elif tag in (b"D", b"C") and body[:1] == b"S":
                name = cstr(body, 1)[0]
        except ValueError:
            pass
        if name and name not in names:
            names[name] = 1 + len(names) % 2
        op0 = (client << 7) | KIND[tag]
        cur.append(bytes([op0, sql_index(sql) if sql is not None else 0,
                          names.get(name, 0), 1 if client else 0]))
        if tag in (b"S", b"Q", b"c", b"F"):
            cur.append(bytes([(client << 7) | 0x40, 0, 0, 0]))
            units.append(cur)
            cur = []
    if cur:
        units.append(cur)
    return units


class Out:
    def __init__(self, root):
        self.root = root
        self.seen = defaultdict(set)

    def put(self, target, label, data):
        if not data or data in self.seen[target]:
            return
        self.seen[target].add(data)
        d = os.path.join(self.root, target)
        os.makedirs(d, exist_ok=True)
        h = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(d, f"{label}-{h}"), "wb") as f:
            f.write(data)


def main(raw_dir, seeds):
    out = Out(seeds)
    by_label = defaultdict(list)
    for f in sorted(os.listdir(raw_dir), key=lambda f: (f.rsplit("-", 1)[0], int(f.rsplit("-", 1)[1][:-4]))):
        label = f.rsplit("-", 1)[0]
        raw = open(os.path.join(raw_dir, f), "rb").read()
        packets, frames = parse(raw)
        if not packets:
            continue
        by_label[label].append(frames)
        for p in packets:
            out.put("wire_diff", label, p)
            out.put("protocol", label, p[4:])
        stream = b"".join(fr for _, fr in frames)
        out.put("protocol", label, stream[:16384])
        out.put("wire_diff", label, stream[:16384])
        for tag, frame in frames:
            out.put("protocol", label, frame)
            out.put("wire_diff", label, frame)
            sql = sql_of(tag, frame)
            if sql:
                out.put("scanner", label, sql)
    for label, conns in by_label.items():
        conns = [c for c in conns if any(t in (b"Q", b"S") for t, _ in c)]
        for k in range(0, len(conns), 2):
            names = {}
            a = ops_of(conns[k], 0, names)
            b = ops_of(conns[k + 1], 1, names) if k + 1 < len(conns) else []
            seq = []
            for i in range(max(len(a), len(b))):
                seq += (a[i] if i < len(a) else []) + (b[i] if i < len(b) else [])
            ops = b"".join(seq)[: 4 * 400]
            # First byte: bit 0 picks the database: 0 = routed "app", 1 = "plain".
            out.put("session", label, b"\x00" + ops)
            out.put("session", label, b"\x01" + ops)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""journal_check.py -- journal_crash.sh's judge: BABS's state, as read from
the image with the sqlite3 CLI, against the accounts of a4ps-journal-writer.

    journal_check.py STATE_TSV RECORD_DIR...

STATE_TSV: `key<TAB>value` lines of BABS's state.  RECORD_DIR: one directory
per round of writers, oldest first, holding the files c<N> (lines "ack SEQ
NOTE", "nak SEQ ...", "lost SEQ ERRNO", "noconnect ERRNO") and named by
the round's tag, which is in every note text: "c<N> <TAG> w<SEQ>[ xxx...]".

Fails (exit 1, examples on stdout) when an acknowledged write is missing,
is stored twice, sits under another note number than its reply said, when
a client's notes are out of order (a later write under a smaller number),
when a note that no writer sent or was unsure of appears, or when "next"
would reuse a stored note's number.  Prints the totals either way."""
import os
import re
import sys
from collections import defaultdict

NOTE = re.compile(r"^c(\d+) (\S+) w(\d+)(?: x+)?$")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    state_path, dirs = sys.argv[1], sys.argv[2:]
    tags = [os.path.basename(d.rstrip("/")) for d in dirs]
    order = {t: i for i, t in enumerate(tags)}

    nxt = None
    by_write = defaultdict(list)      # (client, tag, seq) -> note numbers holding it
    strangers = []                    # notes no writer of these rounds sent
    with open(state_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            key, _, value = line.partition("\t")
            if key == "next":
                nxt = int(value)
                continue
            if not key.startswith("note:"):
                strangers.append(f"key {key!r}")
                continue
            n = int(key[5:])
            m = NOTE.match(value)
            if not m or m.group(2) not in order:
                strangers.append(f"note:{n} = {value[:60]!r}")
                continue
            by_write[(int(m.group(1)), m.group(2), int(m.group(3)))].append(n)

    acked = {}                        # (client, tag, seq) -> the number its reply gave
    unsure = set()                    # sent, not acknowledged: may or may not be there
    clients = set()
    for d, tag in zip(dirs, tags):
        for name in sorted(os.listdir(d)):
            if not re.fullmatch(r"c\d+", name):
                continue
            c = int(name[1:])
            clients.add(c)
            with open(os.path.join(d, name)) as f:
                for line in f:
                    w = line.split()
                    if not w:
                        continue
                    if w[0] == "ack":
                        acked[(c, tag, int(w[1]))] = int(w[2])
                    elif w[0] in ("nak", "lost"):
                        unsure.add((c, tag, int(w[1])))

    problems = defaultdict(list)
    found = 0
    for k, n in acked.items():
        held = by_write.get(k, [])
        what = f"c{k[0]} {k[1]} w{k[2]:06d} (acknowledged as #{n})"
        if not held:
            problems["acknowledged writes missing"].append(what)
            continue
        found += 1
        if len(held) > 1:
            problems["acknowledged writes stored more than once"].append(
                f"{what} under " + ", ".join(f"note:{x}" for x in sorted(held)))
        elif held[0] != n:
            problems["acknowledged writes under another number than their reply's"].append(
                f"{what} is note:{held[0]}")
    unsure_found = 0
    for k, held in by_write.items():
        if k in acked:
            continue
        what = f"c{k[0]} {k[1]} w{k[2]:06d}"
        if k not in unsure:
            problems["notes no writer sent (or acknowledged ones of another run)"].append(
                f"{what} as note:{held[0]}")
        else:
            unsure_found += 1
            if len(held) > 1:
                problems["unacknowledged writes stored more than once"].append(
                    what + " under " + ", ".join(f"note:{x}" for x in sorted(held)))
    for s in strangers:
        problems["notes no writer sent (or acknowledged ones of another run)"].append(s)

    # Per client, in the order it wrote (round, then seq): rising note numbers.
    per_client = defaultdict(list)
    for k, held in by_write.items():
        for n in held:
            per_client[k[0]].append(((order[k[1]], k[2]), n, k))
    for c, notes in per_client.items():
        notes.sort()
        for (_, n0, k0), (_, n1, k1) in zip(notes, notes[1:]):
            if n1 <= n0:
                problems["writes of one client out of order"].append(
                    f"c{c}: {k0[1]} w{k0[2]:06d} is note:{n0}, the later {k1[1]} w{k1[2]:06d} "
                    f"note:{n1}")
    top = max((n for held in by_write.values() for n in held), default=0)
    if by_write and (nxt is None or nxt <= top):
        problems['"next" would overwrite a note'].append(
            f"next = {nxt}, the highest note is note:{top}")

    lost = len(acked) - found
    pct = f" ({100.0 * lost / len(acked):.1f}% lost)" if acked else ""
    print(f"  {len(dirs)} round(s), {len(clients)} client(s): {len(acked)} acknowledged writes, "
          f"{found} found, {lost} missing{pct}; {len(unsure)} unacknowledged in flight, "
          f"{unsure_found} of them stored; {sum(map(len, by_write.values()))} notes in the state")
    for what, examples in problems.items():
        print(f"  {what}: {len(examples)}, e.g.")
        for e in examples[:8]:
            print(f"      {e}")
    if not acked:
        print("  no write was acknowledged: nothing was tested")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_engine_control into fuzz/corpus/engine_control/.

Each seed is a small program in the target's input encoding (see
fuzz_engine_control.cpp: Cluster(), run() and the op functions, which read
the input with fuzz/fuzz_input.h: little-endian, below(n) = u16 % n). Check
what a seed does with
    RCPG_FUZZ_TRACE=1 build-fuzz/fuzz/fuzz_engine_control fuzz/corpus/engine_control/<seed>

    fuzz/engine_control_seeds.py [DIR]
"""
import os
import struct
import sys

# Cluster flags
N4, SPACED, ANYTHING, FRAGMENTS, HOLD, LATE = 1, 2, 4, 32, 64, 128


def hostile_slot(slot):
    return (slot & 3) << 3


# ops (run(): in_.u8() % 12)
TYPED, TYPED_ALL, RAW, IMM, SEND, OWN_ROUND, LIFECYCLE, ANSWER, OWN_LOG, CLOCK, ROUNDS = range(11)

# typed_message() types
PREPARE, STATE, PROPOSE, ACCEPTED, COMMIT, RESUME, HELLO = range(7)

# pick_epoch() / pick_ballot() selectors
E_SAME, E_NEXT, E_NEXT2, E_PREV, E_PREPARED, E_PROMISED, E_ANY, E_ZERO = range(8)
B_THEIRS, B_OURS_HIGHER, B_THEIR_N_OUR_ID, B_ANY = range(4)

CTRL = {"Hello": 0x4F4C4548, "Prepare": 0x50455250, "State": 0x54415453,
        "Propose": 0x504F5250, "Accepted": 0x54504341, "Commit": 0x4D4D4F43,
        "Resume": 0x554D5352}


def u8(v):
    return struct.pack("<B", v & 0xFF)


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def header(seed, flags):
    return u8(seed) + u8(flags)


def epoch(sel, value=0):
    return u8(sel) + (u32(value) if sel == E_ANY else b"")


def ballot(sel, extra=0, coord=0):
    if sel == B_OURS_HIGHER:
        return u8(sel) + u8(extra)
    if sel == B_ANY:
        return u8(sel) + u64(extra) + u32(coord) + u32(0)
    return u8(sel)


def plausible_value(nodes, cut_delta=0, gseq_minus_1=1, continuing=1, seq_idx=0, holder_idx=0,
                    mask=0xFF, unaligned=False):
    """make_value() mode 0 (2: unaligned): configured members with real
    incarnations, continuing from the recipient's view, the cut at the
    recipient's received position + 8 * cut_delta (+ cut_delta if unaligned)."""
    b = u8(2 if unaligned else 0) + u16(cut_delta) + u8(gseq_minus_1) + u8(mask)
    count = bin(mask & ((1 << nodes) - 1)).count("1") or nodes
    for _ in range(count):
        b += u8(continuing) + u16(0) + u16(0) + u8(0)  # received = consumed = cut, no sseq_hwm
    return b + u8(seq_idx) + u8(holder_idx)


def other_coord(slot_pick):
    """other_than(): a configured node picked by index."""
    return u8(1) + u8(slot_pick)


def spoil(kind, pick=0):
    """spoil(): the way a strict-mode value is made invalid."""
    extra = {1: u8(pick), 3: b"", 4: u8(pick) + u8(pick), 5: u8(pick) + u8(pick),
             6: u8(pick) + u8(pick), 7: u8(pick), 8: u8(pick), 11: u8(pick), 12: u8(pick)}
    return u8(kind) + extra.get(kind, b"")


def typed(to, body):
    return u8(TYPED) + u8(to) + body


def rounds(n):
    return u8(ROUNDS) + u8(n - 1)


def send(node, guarantee, extra):
    return u8(SEND) + u8(node) + u8(guarantee) + u16(extra)


def raw(to, data, type_name=None):
    """raw_message(): `data` (its length from the input), optionally with a
    real type word in front."""
    how = 1
    if type_name:
        how |= 2 | (list(CTRL).index(type_name) << 2)
    return u8(RAW) + u8(to) + u8(how) + u16(len(data)) + data


def seeds(nodes=3):
    out = {}
    # Strict: an engine's control messages cut short, wrong types and garbage.
    s = header(1, 0) + send(0, 2, 10) + send(1, 3, 3000)
    for i, name in enumerate(CTRL):
        s += raw(i % 2, b"\x00" * 20, name)
    s += raw(0, b"\xff" * 300) + raw(1, b"") + raw(0, b"\x01\x02\x03")
    s += rounds(4) + send(0, 1, 0)
    out["strict-truncated-and-wrong-types"] = s

    # Strict: typed messages that must be ignored: Prepare of another
    # coordinator, State and Accepted for nobody's round, invalid views.
    s = header(2, 0) + send(0, 2, 100)
    s += typed(0, u8(PREPARE) + epoch(E_NEXT) + ballot(B_OURS_HIGHER, 3) + other_coord(0))
    s += typed(1, u8(STATE) + epoch(E_NEXT) + ballot(B_ANY, 5, 7) + u8(0))
    s += typed(0, u8(PROPOSE) + epoch(E_NEXT) + ballot(B_OURS_HIGHER, 1) + plausible_value(nodes)
               + u8(0) + spoil(9))
    s += typed(1, u8(ACCEPTED) + epoch(E_NEXT) + ballot(B_OURS_HIGHER, 1))
    for kind in (0, 2, 4, 6, 7, 8, 9, 10, 11, 12):
        s += typed(kind % 2, u8(COMMIT) + epoch(E_NEXT) + plausible_value(nodes) + spoil(kind, 1))
    s += typed(0, u8(HELLO) + u8(2)) + typed(1, u8(HELLO) + u8(3) + u16(10))
    s += rounds(8) + send(1, 3, 5)
    out["strict-ignored-messages"] = s

    # Strict: the hostile node starts a round of its own and never finishes
    # it, goes silent long enough to be suspected, comes back, restarts.
    s = header(3, 0) + send(0, 3, 50) + send(1, 0, 60)
    s += u8(OWN_ROUND) + u8(1) + u8(5) + rounds(16) + send(0, 2, 70)
    s += u8(LIFECYCLE) + u8(4) + u8(120) + send(1, 2, 80) + rounds(16)
    s += u8(LIFECYCLE) + u8(1) + u8(0) + rounds(16) + send(0, 1, 90)
    s += u8(LIFECYCLE) + u8(2) + u8(1) + rounds(8)
    out["strict-own-round-silence-restart"] = s

    # Strict: immediates of every type, a forged own ack slot, Resume anywhere.
    s = header(4, N4) + send(0, 3, 20) + send(2, 3, 20)
    for t in range(8):
        s += u8(IMM) + u8(t) + u8(t | 0x40) + u16(t * 3)
    s += u8(IMM) + u8(0) + u8(0x80) + u32(0x6000_0001)
    s += u8(IMM) + u8(0) + u8(0x20 | 5) + u16(0) + u64(1 << 40) + u64(5) + u8(0)
    s += typed(0, u8(RESUME) + u8(1) + u8(1) + u64(3))
    s += typed(0, u8(RESUME) + u8(1) + u8(0) + u16(4099))
    s += rounds(8) + send(1, 2, 30)
    out["strict-immediates-resume"] = s

    # Anything: a whole round run by the hostile node - Prepare, then a
    # valid Propose and Commit of the same view (all members, sequencer 1,
    # the cut where the log is), which the engines accept and install.
    s = header(5, ANYTHING | hostile_slot(2)) + send(0, 2, 8) + rounds(4)
    s += u8(OWN_ROUND) + u8(0) + epoch(E_NEXT) + ballot(B_OURS_HIGHER, 9) + rounds(2)
    for to in (0, 1):
        s += typed(to, u8(PROPOSE) + epoch(E_NEXT) + ballot(B_OURS_HIGHER, 9)
                   + plausible_value(nodes, 0, 2))
    s += rounds(2)
    for to in (0, 1):
        s += typed(to, u8(COMMIT) + epoch(E_NEXT) + plausible_value(nodes, 0, 2))
    s += rounds(4) + send(1, 3, 8) + rounds(4)
    out["anything-valid-prepare-propose-commit"] = s

    # Anything: a committed view whose cut is ahead of the log (members fetch
    # it from the hostile holder, whose mirror the input wrote), and lying
    # answers to the engines' own rounds.
    s = header(6, ANYTHING | hostile_slot(2)) + send(0, 2, 8) + rounds(2)
    s += u8(OWN_LOG) + u16(0) + u16(64) + bytes(range(64))
    s += typed(1, u8(COMMIT) + epoch(E_NEXT) + plausible_value(nodes, 40, 3, 1, 0, 2))
    s += rounds(4) + u8(LIFECYCLE) + u8(4) + u8(60)
    s += u8(ANSWER) + u8(0) + u8(0)  # node 1's last round: a lying State
    s += u8(1) + u8(1)               # view_epoch: that round's epoch + 1
    s += u8(0) + u16(512)            # received: node 1's position + 512
    s += u8(1) + u64(0)              # consumed 0
    s += u64(7)                      # next_gseq
    s += u8(0)                       # reach as it is
    s += u8(1) + u8(0)               # has_view, not has_accepted
    s += u8(1) + u8(1) + u8(0xFF)    # reliable, not refused, no sseq_hwm lie
    s += ballot(B_THEIRS) + plausible_value(nodes)
    s += rounds(8)
    out["anything-cut-ahead-lying-state"] = s

    # Anything: Hello for other ring sizes (the engine stops, logging why),
    # regions that are not ours, a new incarnation.
    s = header(7, ANYTHING | hostile_slot(1)) + send(0, 2, 8)
    s += typed(0, u8(HELLO) + u8(5) + u32(77) + u32(9))
    s += typed(0, u8(HELLO) + u8(6) + u8(0) + u64(0) + u32(0) + u64(1 << 30))
    s += typed(1, u8(HELLO) + u8(4) + u8(0) + u8(0))
    s += rounds(8)
    out["anything-hello-variants"] = s

    # Regression (fixed): a Commit whose cut is not a multiple of 8 was
    # installed, and every record header after it read misaligned.
    s = header(9, ANYTHING | hostile_slot(2)) + rounds(2)
    s += typed(0, u8(COMMIT) + epoch(E_NEXT) + plausible_value(nodes, 135, 1, unaligned=True))
    s += rounds(4)
    out["regression-engine_control-unaligned-cut"] = s

    # A hostile holder: node 2 continues into a view whose cut lies past
    # its log and fetches the difference from node 3, whose mirror holds a
    # Data record up to 48 bytes before the ring's end and there a View
    # record whose payload runs past the end.
    log = 16384
    data_len = log - 48 - 64 - 40
    data = struct.pack("<QQIIIIBBHI", 2, 1, data_len, 1, 0, 0, 1, 2, 0, 0)
    view = struct.pack("<QQIIIIBBHI", 3, 0, 64, 1, 0, 0, 4, 2, 0, 2)
    cut = 64 + (40 + data_len) + 40 + 64
    s = header(10, ANYTHING | hostile_slot(2)) + rounds(2)
    s += u8(OWN_LOG) + u16(64) + u16(len(data)) + data
    s += u8(OWN_LOG) + u16(log - 48) + u16(len(view)) + view
    s += typed(1, u8(COMMIT) + epoch(E_NEXT)
               + plausible_value(nodes, (cut - 64) // 8, 2, 1, 0, 2))
    s += rounds(8)
    out["regression-engine_control-scan-log-view-past-ring-end"] = s
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "engine_control")
    os.makedirs(d, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Reads cpg_bench JSON lines (scripts/side-by-side's results.jsonl) and
  check FILE            verifies every run: each member ok (no loss, FIFO,
                        payload or stray errors) and, per phase, all members
                        of a run report the same delivery-order digest
  table FILE [--md OUT] prints markdown tables, rcpg next to Corosync with
                        ratios, per setup
  plot FILE OUTDIR      latency CDF and throughput-vs-size PNGs per setup
"""
import argparse
import json
import sys
from collections import defaultdict


def load(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"{path}:{n}: not JSON ({e}); skipped", file=sys.stderr)
    return rows


# ------------------------------------------------------------------ check
def check(rows):
    bad = 0
    phases = defaultdict(list)
    for r in rows:
        phases[(r["run"], r["phase"])].append(r)
        if not r.get("ok", 0):
            bad += 1
            print(f"FAILED {r['run']} phase {r['phase']} rank {r['rank']}: lost {r['lost']} "
                  f"dup {r['duplicates']} fifo {r['fifo_errors']} payload {r['bad_payload']} "
                  f"stray {r['stray']}")
    runs = defaultdict(lambda: [0, 0])
    for (run, phase), members in sorted(phases.items()):
        digests = {m["order_digest"] for m in members}
        expect = members[0]["members"]
        ok = len(digests) == 1 and len(members) == expect
        runs[run][0 if ok else 1] += 1
        if not ok:
            bad += 1
            print(f"ORDER MISMATCH {run} phase {phase}: {len(members)}/{expect} members, "
                  f"digests {sorted(digests)}")
    for run, (good, wrong) in sorted(runs.items()):
        print(f"  {run:40s} {good} phases with identical order at all members"
              + (f", {wrong} MISMATCHED" if wrong else ""))
    print("check: " + ("all runs ok" if not bad else f"{bad} problems"))
    return 0 if not bad else 1


# ------------------------------------------------------------------ table
IMPLS = ("rcpg", "corosync")


def setup_pairs(rows):
    """Setups to compare: rcpg's setups against Corosync's setups of the same
    place (native/guest), same node count first."""
    setups = defaultdict(set)
    for r in rows:
        setups[r["impl"]].add(r["setup"])
    pairs = []
    for rs in sorted(setups.get("rcpg", ())):
        where = rs.split("-")[0]
        for cs in sorted(setups.get("corosync", ()), key=lambda s: (s != rs, s)):
            if cs.split("-")[0] == where:
                pairs.append((rs, cs))
    for cs in sorted(setups.get("corosync", ())):
        if not any(cs == p[1] for p in pairs):
            pairs.append((None, cs))
    return pairs


def index(rows):
    """(impl, setup, kind, api, size, members, senders) -> aggregated metrics
    of one run: latency of rank 0 (rtt) or worst receiver (one-way),
    throughput of the slowest receiver and of the senders."""
    g = defaultdict(list)
    for r in rows:
        kind = r["test"]
        g[(r["impl"], r["setup"], kind, r["api"], r["size"], r["members"], r["senders"])].append(r)
    out = {}
    for k, rs in g.items():
        m = {}
        rtt = [r["rtt"] for r in rs if "rtt" in r]
        if rtt:
            m["rtt_p50"] = rtt[0]["p50_us"]
            m["rtt_p99"] = rtt[0]["p99_us"]
            m["rtt_cdf"] = (rtt[0]["cdf_q"], rtt[0]["cdf_us"])
        recv = [r for r in rs if r["role"] == "receiver"] or rs
        m["ow_p50"] = max(r["one_way"]["p50_us"] for r in recv)
        m["ow_p99"] = max(r["one_way"]["p99_us"] for r in recv)
        worst = max(recv, key=lambda r: r["one_way"]["p50_us"])
        m["ow_cdf"] = (worst["one_way"]["cdf_q"], worst["one_way"]["cdf_us"])
        m["recv_mps"] = min(r["recv_msgs_per_s"] for r in rs)
        m["recv_mbps"] = min(r["recv_mb_per_s"] for r in rs)
        senders = [r for r in rs if "send_msgs_per_s" in r]
        if senders:
            m["send_mps"] = sum(r["send_msgs_per_s"] for r in senders)
            m["try_again"] = sum(r["try_again"] for r in senders)
        m["ok"] = all(r["ok"] for r in rs) and len({r["order_digest"] for r in rs}) == 1
        out[k] = m
    return out


def fmt(v, unit=""):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}{unit}"
    return f"{v:.1f}{unit}"


def ratio(a, b, higher_better):
    if a is None or b is None or a == 0 or b == 0:
        return "–"
    x = a / b if higher_better else b / a
    return f"**{x:.1f}x**" if x >= 1 else f"{x:.2f}x"


def tables(rows):
    idx = index(rows)
    lines = []
    for rs, cs in setup_pairs(rows):
        title = f"rcpg `{rs}` vs Corosync `{cs}`" if rs else f"Corosync `{cs}` (no rcpg run)"
        lines += ["", f"### {title}", ""]
        keys = sorted({k[2:] for k in idx if k[1] in (rs, cs) and k[0] in IMPLS},
                      key=lambda k: (k[0], k[3], k[4], k[1], k[2]))
        lat = [k for k in keys if k[0] == "latency"]
        tput = [k for k in keys if k[0] == "throughput"]
        if lat:
            lines.append("| test | api | size B | procs | rcpg p50 µs | Corosync p50 µs | p50 ratio "
                         "| rcpg p99 µs | Corosync p99 µs | p99 ratio |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
            for k in lat:
                a = idx.get(("rcpg", rs) + k, {}) if rs else {}
                b = idx.get(("corosync", cs) + k, {})
                what = "round trip" if k[3] == 1 else "one-way, worst receiver"
                pa = a.get("rtt_p50" if k[3] == 1 else "ow_p50")
                pb = b.get("rtt_p50" if k[3] == 1 else "ow_p50")
                qa = a.get("rtt_p99" if k[3] == 1 else "ow_p99")
                qb = b.get("rtt_p99" if k[3] == 1 else "ow_p99")
                lines.append(f"| {what} | {k[1]} | {k[2]:,} | {k[3]} | {fmt(pa)} | {fmt(pb)} | "
                             f"{ratio(pa, pb, False)} | {fmt(qa)} | {fmt(qb)} | {ratio(qa, qb, False)} |")
            lines.append("")
        if tput:
            lines.append("| api | size B | procs | senders | rcpg msgs/s | Corosync msgs/s | ratio "
                         "| rcpg MB/s | Corosync MB/s | TRY_AGAIN rcpg/Corosync | order ok |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for k in tput:
                a = idx.get(("rcpg", rs) + k, {}) if rs else {}
                b = idx.get(("corosync", cs) + k, {})
                ok = "/".join("yes" if m.get("ok") else ("–" if not m else "NO") for m in (a, b))
                lines.append(
                    f"| {k[1]} | {k[2]:,} | {k[3]} | {k[4]} | {fmt(a.get('recv_mps'))} | "
                    f"{fmt(b.get('recv_mps'))} | {ratio(a.get('recv_mps'), b.get('recv_mps'), True)} | "
                    f"{fmt(a.get('recv_mbps'))} | {fmt(b.get('recv_mbps'))} | "
                    f"{a.get('try_again', '–')}/{b.get('try_again', '–')} | {ok} |")
    lines += ["", "Latency: p50/p99 in µs (1 process: self-delivery round trip; 3 processes: one-way "
              "from rank 0, worst receiver). Throughput: delivered msgs/s at the slowest member "
              "(all senders together). Ratios > 1 (bold) favour rcpg."]
    return "\n".join(lines)


# ------------------------------------------------------------------ plots
def plots(rows, outdir):
    try:
        import matplotlib
    except ImportError:
        print(f"plot.py: matplotlib is missing for {sys.executable} (Debian: python3-matplotlib, "
              "used by /usr/bin/python3)", file=sys.stderr)
        return 1
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import os
    os.makedirs(outdir, exist_ok=True)
    idx = index(rows)
    written = []
    for rs, cs in setup_pairs(rows):
        name = f"{rs or 'none'}_vs_{cs}"
        # Latency CDF: single-process round trip at every size, both impls.
        fig, ax = plt.subplots(figsize=(8, 5))
        sizes = sorted({k[4] for k in idx if k[2] == "latency"})
        colour = {sz: f"C{i % 10}" for i, sz in enumerate(sizes)}  # same size, same colour
        for (impl, setup, kind, api, size, members, senders), m in sorted(idx.items()):
            if kind != "latency" or api != "iovec" or members != 1 or setup not in (rs, cs):
                continue
            if (impl == "rcpg" and setup != rs) or (impl == "corosync" and setup != cs):
                continue
            q, us = m.get("rtt_cdf", m["ow_cdf"])
            ax.plot(us, [x / 100 for x in q], label=f"{impl} {size} B", color=colour[size],
                    linestyle="-" if impl == "rcpg" else "--")
        if ax.lines:
            ax.set_xscale("log")
            ax.set_xlabel("self-delivery round trip (µs, log)")
            ax.set_ylabel("fraction of messages")
            ax.set_title(f"CPG latency CDF: rcpg {rs} vs Corosync {cs}" if rs else f"CPG latency CDF: Corosync {cs}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            p = f"{outdir}/latency_cdf_{name}.png"
            fig.savefig(p, dpi=120, bbox_inches="tight")
            written.append(p)
        plt.close(fig)
        # Throughput vs size: one line per (impl, procs, senders).
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
        series = defaultdict(list)
        for (impl, setup, kind, api, size, members, senders), m in idx.items():
            if kind != "throughput" or api != "iovec":
                continue
            if (impl == "rcpg" and setup != rs) or (impl == "corosync" and setup != cs):
                continue
            series[(impl, members, senders)].append((size, m["recv_mps"], m["recv_mbps"]))
        for (impl, members, senders), pts in sorted(series.items()):
            pts.sort()
            label = f"{impl} {members} proc, {senders} sender"
            style = "-o" if impl == "rcpg" else "--s"
            a1.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            a2.plot([p[0] for p in pts], [p[2] for p in pts], style, label=label)
        if series:
            for ax, yl in ((a1, "delivered msgs/s (slowest member)"), (a2, "MB/s (slowest member)")):
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("message size (bytes)")
                ax.set_ylabel(yl)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
            fig.suptitle(f"CPG throughput: rcpg {rs} vs Corosync {cs}" if rs else f"CPG throughput: Corosync {cs}")
            p = f"{outdir}/throughput_{name}.png"
            fig.savefig(p, dpi=120, bbox_inches="tight")
            written.append(p)
        plt.close(fig)
    for p in written:
        print(f"wrote {p}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("file")
    t = sub.add_parser("table")
    t.add_argument("file")
    t.add_argument("--md", help="also write the tables to this file")
    p = sub.add_parser("plot")
    p.add_argument("file")
    p.add_argument("outdir")
    a = ap.parse_args()
    try:
        rows = load(a.file)
    except OSError as e:
        print(f"plot.py: cannot read {a.file}: {e}", file=sys.stderr)
        return 1
    if not rows:
        print(f"plot.py: no results in {a.file}", file=sys.stderr)
        return 1
    if a.cmd == "check":
        return check(rows)
    if a.cmd == "table":
        text = tables(rows)
        print(text)
        if a.md:
            with open(a.md, "w") as f:
                f.write(text + "\n")
        return 0
    return plots(rows, a.outdir)


if __name__ == "__main__":
    sys.exit(main())

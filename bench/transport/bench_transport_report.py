#!/usr/bin/env python3
"""Summary of scripts/bench-transport: reads the raw outputs (rcpg JSON,
perftest text) from the raw directory, prints the comparison tables and writes
the JSON summary. Called by scripts/bench-transport; can be rerun by hand on a
raw directory:

  python3 bench/transport/bench_transport_report.py --raw out/bench-transport.d \
      --sizes 8,64,512,4096,65536,1048576 --out out/bench-transport.json
"""
import argparse
import glob
import json
import os
import platform
import re
import sys
import time

LAT_TARGET, BW_TARGET = 1.2, 0.9
MIB = 1 << 20
TOK = r"[-+]?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"
NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
LAT_COLS = ["bytes", "iters", "t_min_us", "t_max_us", "t_typical_us", "t_avg_us", "t_stdev_us",
            "p99_us", "p999_us"]
BW_COLS = ["bytes", "iters", "bw_peak_MiBps", "bw_avg_MiBps", "msg_rate_Mpps"]


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fnum(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def label(b):
    if b >= MIB and b % MIB == 0:
        return f"{b // MIB} MiB"
    if b >= 1024 and b % 1024 == 0:
        return f"{b // 1024} KiB"
    return f"{b} B"


def parse_perftest(path, ncols):
    """perftest client output -> (numbers of the result line, (sampled, nominal)
    MHz from its frequency warning or None)."""
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return None, None
    m = re.search(r"measured timestamp frequency " + NUM + r" differs from nominal " + NUM, text)
    mhz = (float(m.group(1)), float(m.group(2))) if m else None
    for line in text.splitlines():
        f = line.split()
        if (len(f) >= ncols and all(re.fullmatch(r"\d+", x) for x in f[:2])
                and all(re.fullmatch(TOK, x) for x in f[2:ncols])):
            return [int(x) for x in f[:2]] + [float(x) for x in f[2:ncols]], mhz
    return None, mhz


def read_setup(raw):
    setup = {}
    try:
        for line in open(os.path.join(raw, "setup.txt")):
            for kv in line.split():
                k, _, v = kv.partition("=")
                setup[k] = v
    except OSError:
        pass
    return setup


def read_counters(raw):
    out = []
    try:
        for line in open(os.path.join(raw, "counters.txt")):
            p = line.split()
            if len(p) == 4:
                out.append({"when": p[0], "device": p[1], "counter": p[2], "value": p[3]})
    except OSError:
        pass
    return out


def parse_round(rd, sizes, setup):
    """One round: rcpg JSON + perftest numbers on a common time base."""
    rcpg = load_json(os.path.join(rd, "rcpg-verbs.json"))
    cpu_mhz = fnum(setup.get("cpu_mhz"))
    # The TSC rate rcpg-transport-bench measured against CLOCK_MONOTONIC over
    # its run: the common time base of both tools' numbers.
    tsc_mhz = fnum((rcpg or {}).get("timer_mhz")) if (rcpg or {}).get("timer") == "rdtsc" else None
    base_mhz = tsc_mhz or cpu_mhz
    lat_in_cycles = setup.get("perftest_lat_units") == "cycles"
    pl, pb = {}, {}
    for s in sizes:
        v, _ = parse_perftest(os.path.join(rd, f"ib_write_lat-{s}-client.txt"), len(LAT_COLS))
        if v and lat_in_cycles:
            cyc = dict(zip(LAT_COLS, v))
            if base_mhz:
                v = dict(zip(LAT_COLS, v[:2] + [x / base_mhz for x in v[2:]]))
                v["cycles"] = cyc
                v["converted_with_mhz"] = base_mhz
            else:
                v = None
        elif v:
            v = dict(zip(LAT_COLS, v))
        if v:
            pl[s] = v
        v, mhz = parse_perftest(os.path.join(rd, f"ib_write_bw-{s}-client.txt"), len(BW_COLS))
        if v:
            v = dict(zip(BW_COLS, v))
            # perftest turned cycles into seconds with `used` MHz: the sampled
            # rate when it warned that it differs from /proc/cpuinfo, else that.
            used = mhz[0] if mhz and mhz[0] > 0 else cpu_mhz
            if used and base_mhz and abs(base_mhz / used - 1) > 1e-4:
                k = base_mhz / used
                v["as_printed"] = dict(v)
                v["rescaled"] = {"perftest_mhz": used, "to_mhz": base_mhz}
                for c in ("bw_peak_MiBps", "bw_avg_MiBps", "msg_rate_Mpps"):
                    v[c] *= k
            pb[s] = v
    rl = {r["bytes"]: r for r in (rcpg or {}).get("latency", [])}
    rb = {r["bytes"]: r for r in (rcpg or {}).get("bandwidth", [])}
    rows = {}
    for s in sizes:
        row = {}
        if s in rl:
            row["rcpg_lat_us"] = rl[s]["one_way_us"]["p50"]
            row["rcpg_lat_min_us"] = rl[s]["one_way_us"]["min"]
        if s in pl:
            row["ib_write_lat_us"] = pl[s]["t_typical_us"]
            row["ib_write_lat_min_us"] = pl[s]["t_min_us"]
        if s in rb:
            row["rcpg_bw_MBps"] = rb[s]["MB_per_s"]
        if s in pb:
            row["ib_write_bw_MBps"] = pb[s]["bw_avg_MiBps"] * MIB / 1e6
        rows[s] = row
    return {"rcpg": rcpg, "perftest": {"ib_write_lat": [pl.get(s) for s in sizes],
                                       "ib_write_bw": [pb.get(s) for s in sizes]},
            "rows": rows}


def ratios(row):
    def div(a, b):
        a, b = row.get(a), row.get(b)
        return a / b if a is not None and b else None
    row["lat_ratio"] = div("rcpg_lat_us", "ib_write_lat_us")
    row["lat_min_ratio"] = div("rcpg_lat_min_us", "ib_write_lat_min_us")
    row["bw_ratio"] = div("rcpg_bw_MBps", "ib_write_bw_MBps")
    row["lat_ok"] = None if row["lat_ratio"] is None else row["lat_ratio"] <= LAT_TARGET
    row["bw_ok"] = None if row["bw_ratio"] is None else row["bw_ratio"] >= BW_TARGET
    return row


def fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def clean(x):
    """Strict JSON: NaN/inf (perftest prints -nan stdev in cycle mode) become null."""
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--shm", default="1")
    ap.add_argument("--verbs", default="1")
    ap.add_argument("--verbs-status", default="")
    ap.add_argument("--strict", default="0")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    summary = {
        "tool": "scripts/bench-transport",
        "unix_time": int(time.time()),
        "host": {"machine": platform.machine(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "sizes": sizes,
        "targets": {"latency_ratio_max": LAT_TARGET, "bandwidth_ratio_min": BW_TARGET},
    }
    missed = 0

    if a.shm == "1":
        shm = load_json(os.path.join(a.raw, "rcpg-shm.json"))
        summary["shm"] = shm
        print("== shm summary (native): one-way latency (usec), write bandwidth")
        if shm:
            bw = {r["bytes"]: r for r in shm["bandwidth"]}
            print(f"{'size':>8} {'lat min':>9} {'lat p50':>9} {'lat p99':>9} {'MB/s':>11} {'Mmsg/s':>8}")
            for r in shm["latency"]:
                b = bw.get(r["bytes"], {})
                o = r["one_way_us"]
                print(f"{label(r['bytes']):>8} {o['min']:>9.3f} {o['p50']:>9.3f} {o['p99']:>9.3f} "
                      f"{fmt(b.get('MB_per_s'), '11.1f'):>11} "
                      f"{fmt(b['msgs_per_s'] / 1e6 if 'msgs_per_s' in b else None, '8.3f'):>8}")
        else:
            print("  (no shm results)")
        print()

    if a.verbs == "1":
        setup = read_setup(a.raw)
        rdirs = sorted(glob.glob(os.path.join(a.raw, "r[0-9]*")), key=lambda p: int(p.rsplit("r", 1)[1]))
        rounds = [parse_round(rd, sizes, setup) for rd in rdirs]
        # Best of the rounds, per tool and metric: interference (other load,
        # scheduler ticks in the guest) only ever makes a run slower.
        best = []
        for s in sizes:
            row = {"bytes": s, "rounds": len(rounds)}
            for key, pick in (("rcpg_lat_us", min), ("rcpg_lat_min_us", min), ("ib_write_lat_us", min),
                              ("ib_write_lat_min_us", min), ("rcpg_bw_MBps", max), ("ib_write_bw_MBps", max)):
                vals = [r["rows"][s][key] for r in rounds if r["rows"][s].get(key) is not None]
                row[key] = pick(vals) if vals else None
            best.append(ratios(row))
            missed += (row["lat_ok"] is False) + (row["bw_ok"] is False)
        per_round = [[ratios(dict(r["rows"][s], bytes=s)) for s in sizes] for r in rounds]
        env = setup.get("environment", "unknown")
        summary["verbs"] = {
            "environment": env,
            "setup": setup,
            "exit_status": int(a.verbs_status) if a.verbs_status else None,
            "comparison": best,
            "comparison_per_round": per_round,
            "rounds": [{"rcpg": r["rcpg"], "perftest": r["perftest"]} for r in rounds],
            "perftest_options": "-F -u 20 -x <IPv4 RoCEv2 GID index> -n <iters> -s <size> (ib_write_lat also "
                                "-C: cycles converted with the TSC rate rcpg-transport-bench measured)",
            "rxe_counters": read_counters(a.raw),
            "missed_targets": missed,
        }
        where = "soft-RoCE guest" if env == "guest" else env
        print(f"== verbs ({where}): rcpg vs perftest in the same run, best of {len(rounds)} round(s)")
        print("   latency: one-way usec, p50 of RTT/2 (ib_write_lat: t_typical); min ratio = ratio of the minima")
        print("   bandwidth: MB/s (1e6 bytes; ib_write_bw's MiB/s converted)")
        print(f"{'size':>8} {'rcpg lat':>10} {'write_lat':>10} {'ratio':>7} {'min ratio':>9}   "
              f"{'rcpg MB/s':>10} {'write_bw':>10} {'ratio':>7}")
        for r in best:
            lm = "" if r["lat_ok"] is None else (" " if r["lat_ok"] else "!")
            bm = "" if r["bw_ok"] is None else (" " if r["bw_ok"] else "!")
            print(f"{label(r['bytes']):>8} {fmt(r['rcpg_lat_us'], '10.2f'):>10} {fmt(r['ib_write_lat_us'], '10.2f'):>10} "
                  f"{fmt(r['lat_ratio'], '6.2f'):>6}x{lm} {fmt(r['lat_min_ratio'], '8.2f'):>8}x   "
                  f"{fmt(r['rcpg_bw_MBps'], '10.3f'):>10} {fmt(r['ib_write_bw_MBps'], '10.3f'):>10} "
                  f"{fmt(r['bw_ratio'], '6.2f'):>6}x{bm}")
        print(f"targets: latency ratio <= {LAT_TARGET}x, bandwidth ratio >= {BW_TARGET}x ('!' = missed)")
        for i, pr in enumerate(per_round, 1):
            lat = " ".join(fmt(r["lat_ratio"], ".2f") for r in pr)
            lmin = " ".join(fmt(r["lat_min_ratio"], ".2f") for r in pr)
            bw = " ".join(fmt(r["bw_ratio"], ".2f") for r in pr)
            print(f"round {i}: latency ratios {lat} | min {lmin} | bandwidth ratios {bw}")
        c = {(x["when"], x["device"], x["counter"]): x["value"] for x in summary["verbs"]["rxe_counters"]}
        d1, d2 = setup.get("client_dev"), setup.get("server_dev")
        try:
            moved = {d: int(c[("r1-after-rcpg", d, "sent_pkts")]) - int(c[("r1-before-rcpg", d, "sent_pkts")])
                     for d in (d1, d2)}
            print(f"round 1 rcpg: packets sent by {d1}: {moved[d1]}, by {d2}: {moved[d2]} "
                  f"(RoCE traffic between the two devices)")
        except (KeyError, ValueError, TypeError):
            pass

    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(clean(summary), fh, indent=2, allow_nan=False)
        fh.write("\n")
    print(f"\nwrote {a.out}")
    return 3 if (a.strict == "1" and missed) else 0


if __name__ == "__main__":
    sys.exit(main())

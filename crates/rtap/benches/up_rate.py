#!/usr/bin/env python3
"""End-to-end ingest rate of the release binary, with its CPU and disk writes per order.

    python3 crates/rtap/benches/up_rate.py BINARY ORDERS [up|backfill]

`up` (default): `rtap up --rate 0 --max-orders ORDERS` on a fresh directory, timed until the
ingest stage of `/api/status` counts every order (generator, order store, ingest, table: the
whole pipeline). `backfill`: `rtap backfill --orders ORDERS --days 29`, timed until it exits.
Prints orders/s, the process's CPU (user + system, from /proc) per order and how many cores
that is, the bytes it wrote to disk per order (/proc/PID/io write_bytes: what the order
store, segments, dedup log and checkpoints cost the disk, write amplification included) and
its peak RSS (VmHWM).

Environment: RTAP_CONFIG_FILE=path passes `--config` (A/B of settings); PERF=out.data records
`perf record --call-graph dwarf` for 6 s once a fifth of the orders are in (`up` only);
RTAP_DATA=dir (a new or empty directory, kept; default a temporary directory, removed at the
end). rtap's output goes to a log file in $TMPDIR (named on failure); RTAP_* variables of the
caller are not passed to rtap. In `backfill` mode the last sample is
taken up to 0.1 s before the process exits.
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, n = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "up"
    if n <= 0 or mode not in ("up", "backfill"):
        sys.exit(__doc__)
    perf = os.environ.get("PERF")
    given = os.environ.get("RTAP_DATA")
    if given and os.path.exists(given) and (not os.path.isdir(given) or os.listdir(given)):
        sys.exit(f"RTAP_DATA={given} is not an empty directory: give a new one")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable")
    data = given or tempfile.mkdtemp(prefix="rtap-up-rate-")
    log = tempfile.NamedTemporaryFile("w", prefix="rtap-up-rate-", suffix=".log", delete=False)
    # rtap reads settings from RTAP_* variables (a database URL, a Kafka broker, a config file,
    # an auth token): none of the caller's may change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTAP_")}
    http_port = free_port()
    config = os.environ.get("RTAP_CONFIG_FILE")
    extra = ["--config", config] if config else []
    if mode == "backfill":
        args = [binary, "backfill", "--orders", str(n), "--days", "29", "--seed", "1"]
    else:
        args = [binary, "up", "--rate", "0", "--max-orders", str(n), "--seed", "1",
                "--http-port", str(http_port), "--dashboard-port", str(free_port()),
                "--api-port", str(free_port())]
    args += extra + ["--data-dir", data]
    started = time.time()
    proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)

    def sample():
        try:
            stat = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            io = dict(line.split(": ") for line in open(f"/proc/{proc.pid}/io").read().splitlines())
        except (OSError, ValueError):
            return None
        try:
            status = open(f"/proc/{proc.pid}/status").read()
            peak = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM"))
        except (OSError, StopIteration, ValueError):
            peak = 0
        tick = os.sysconf("SC_CLK_TCK")
        return int(stat[11]) / tick, int(stat[12]) / tick, int(io["write_bytes"]), peak

    def ingested():
        try:
            url = f"http://127.0.0.1:{http_port}/api/status"
            status = json.load(urllib.request.urlopen(url, timeout=2))
        except (OSError, ValueError, http.client.HTTPException):
            return 0
        for stage in status.get("stages", []):
            if stage.get("name") == "ingest":
                return stage.get("detail", {}).get("rows", 0)
        return 0

    last, recorder, deadline, rows = None, None, started + 3600, 0
    try:
        while time.time() < deadline:
            if mode == "backfill":
                if proc.poll() is not None:
                    break
                last = sample() or last
            else:
                rows = ingested()
                last = sample() or last
                if perf and recorder is None and rows >= n // 5:
                    recorder = subprocess.Popen(
                        ["perf", "record", "-F", "149", "--call-graph", "dwarf,32768", "-o", perf,
                         "-p", str(proc.pid), "--", "sleep", "6"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if rows >= n or proc.poll() is not None:
                    break
            time.sleep(0.1)
        wall = time.time() - started
        if mode == "backfill" and proc.returncode != 0:
            sys.exit(f"rtap backfill failed ({proc.returncode}); see {log.name}")
        if mode == "up" and rows < n:
            sys.exit(f"only {rows} of {n} orders ingested after {wall:.0f} s; see {log.name}")
        if last is None:
            sys.exit("could not sample the process")
        user, system, written, peak_kb = last
        cpu = user + system
        if perf:
            print("(perf was recording: the figures below are disturbed)")
        peak = f"peak RSS {peak_kb / 1024:.0f} MB" if peak_kb else "peak RSS unknown"
        print(f"{mode} {n} orders: {wall:.1f} s, {n / wall:,.0f} orders/s; CPU {cpu:.1f} s "
              f"(user {user:.1f}, system {system:.1f}) = {cpu / wall:.2f} cores, "
              f"{cpu / n * 1e6:.1f} us/order; written {written / n:,.0f} B/order; {peak}")
        if recorder:
            recorder.wait()
        log.close()
        os.unlink(log.name)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not given:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

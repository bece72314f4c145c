"""execute_request round trip of a trivial cell, for each kernel named, after warm-up (run by bench.mjs).

Usage: bench_latency.py N WARMUP KERNEL=CODE [KERNEL=CODE ...]; prints one JSON object:
{kernel: {"p50_ms", "p95_ms", "mean_ms", "n", "startup_s"}}. The round trip is from sending
execute_request to receiving its execute_reply on the shell channel.
"""
import json
import statistics
import sys
import time

from jupyter_client.manager import start_new_kernel


def measure(kernel, code, n, warmup):
    t0 = time.perf_counter()
    km, kc = start_new_kernel(kernel_name=kernel)
    startup = time.perf_counter() - t0
    try:
        times = []
        for i in range(warmup + n):
            start = time.perf_counter()
            msg_id = kc.execute(code)
            while True:
                reply = kc.get_shell_msg(timeout=60)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            elapsed = time.perf_counter() - start
            assert reply["content"]["status"] == "ok", reply["content"]
            if i >= warmup:
                times.append(elapsed * 1000)
            # Drain iopub so queues do not grow between requests.
            while True:
                msg = kc.get_iopub_msg(timeout=10)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
        times.sort()
        q = statistics.quantiles(times, n=100, method="inclusive")
        return {"p50_ms": round(statistics.median(times), 3), "p95_ms": round(q[94], 3), "mean_ms": round(statistics.fmean(times), 3), "n": n, "startup_s": round(startup, 2)}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main():
    n, warmup = int(sys.argv[1]), int(sys.argv[2])
    out = {}
    for spec in sys.argv[3:]:
        kernel, code = spec.split("=", 1)
        out[kernel] = measure(kernel, code, n, warmup)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

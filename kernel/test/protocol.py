"""Interrupts, comms and live run displays of the `lathe` kernel, through jupyter_client (run by protocol.test.ts).

Environment: LATHE_TEST_RECIPE (the Tally recipe), LATHE_TEST_OUT (a scratch folder for runs).
"""
import json
import os
import re
import time
import unittest
import uuid
from queue import Empty

from jupyter_client.manager import start_new_kernel

RECIPE = os.environ["LATHE_TEST_RECIPE"]
OUT = os.environ["LATHE_TEST_OUT"]
RUN_MIME = "application/vnd.lathe.run+json"
RECIPE_MIME = "application/vnd.lathe.recipe+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class KernelCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.km, cls.kc = start_new_kernel(kernel_name="lathe", cwd=OUT)
        cls.run_ok_cls(f"import {{ recipe, runs, data, evaluate }} from 'lathe';\nconst r = await recipe.load({json.dumps(RECIPE)});")

    @classmethod
    def tearDownClass(cls):
        cls.kc.stop_channels()
        cls.km.shutdown_kernel(now=True)

    @classmethod
    def reply_for(cls, msg_id, timeout):
        while True:
            reply = cls.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    @classmethod
    def iopub_until_idle(cls, msg_id, timeout, on_msg=None):
        """Every iopub message of a request, up to its idle status."""
        out = []
        end = time.time() + timeout
        while True:
            msg = cls.kc.get_iopub_msg(timeout=max(0.1, end - time.time()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msg["received"] = time.time()
            if on_msg:
                on_msg(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return out
            out.append(msg)

    @classmethod
    def run_ok_cls(cls, code, timeout=120):
        msg_id = cls.kc.execute(code)
        msgs = cls.iopub_until_idle(msg_id, timeout)
        reply = cls.reply_for(msg_id, timeout)
        assert reply["content"]["status"] == "ok", (code, reply["content"], [m["content"] for m in msgs])
        return msgs

    def run_ok(self, code, timeout=120):
        return self.run_ok_cls(code, timeout)

    def result_text(self, msgs):
        results = [m for m in msgs if m["msg_type"] == "execute_result"]
        self.assertEqual(len(results), 1, msgs)
        return results[0]["content"]["data"]["text/plain"]

    def send(self, channel, msg_type, content):
        msg = self.kc.session.msg(msg_type, content)
        getattr(self.kc, f"{channel}_channel").send(msg)
        return msg["header"]["msg_id"]

    def comm_data(self, comm_id, want, timeout=60):
        """Comm messages for comm_id until one has type `want`; returns them all."""
        seen = []
        end = time.time() + timeout
        while time.time() < end:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except Empty:
                continue
            if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
                seen.append(msg["content"]["data"])
                if msg["content"]["data"].get("type") == want:
                    return seen
        raise AssertionError(f"no {want} comm message; got {seen}")

    def comm_info(self, target=None):
        msg_id = self.kc.comm_info(target_name=target)
        return self.reply_for(msg_id, 10)["content"]["comms"]


class InterruptTests(KernelCase):
    def test_interrupt_stops_training_at_step_boundary_with_checkpoint(self):
        out = os.path.join(OUT, "interrupted")
        msg_id = self.kc.execute(f"const run = await r.run({{ steps: 20, out: {json.dumps(out)} }});")
        wait_for(lambda: len(read_jsonl(os.path.join(out, "metrics.jsonl"))) >= 2, 120, "two training steps")
        self.km.interrupt_kernel()  # SIGINT: the spec's interrupt_mode is "signal", like the stop button
        msgs = self.iopub_until_idle(msg_id, 60)
        reply = self.reply_for(msg_id, 60)
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        notes = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")
        self.assertIn("at the next step boundary", notes)

        events = read_jsonl(os.path.join(out, "events.jsonl"))
        stopped = [e for e in events if e["type"] == "interrupted"]
        self.assertEqual(len(stopped), 1, events)
        step = int(re.fullmatch(r"interrupted at step (\d+)", stopped[0]["message"]).group(1))
        self.assertTrue(2 <= step < 20, step)
        self.assertTrue(os.path.isdir(os.path.join(out, "checkpoints", str(step))))

        # The kernel stays usable, and run.resume() continues from the checkpoint to the planned 20 steps.
        self.assertEqual(self.result_text(self.run_ok("run.status")), "interrupted")
        msgs = self.run_ok("const resumed = await run.resume();\nresumed.summary?.step", timeout=180)
        self.assertEqual(self.result_text(msgs), "20")
        messages = [e["message"] for e in read_jsonl(os.path.join(out, "events.jsonl"))]
        self.assertIn(f"resumed from step {step}", messages)
        self.assertEqual(messages[-1], "completed 20 steps")
        self.assertEqual([m["step"] for m in read_jsonl(os.path.join(out, "metrics.jsonl"))], list(range(1, 21)))
        # Shown live as r.run() is: one display, updated in place, ending complete with the steps before the interrupt too.
        shows = [m for m in msgs if m["msg_type"] == "display_data" and RUN_MIME in m["content"]["data"]]
        self.assertEqual(len(shows), 1, msgs)
        display_id = shows[0]["content"]["transient"]["display_id"]
        updates = [m for m in msgs if m["msg_type"] == "update_display_data" and m["content"]["transient"]["display_id"] == display_id]
        self.assertGreaterEqual(len(updates), 1)
        final = updates[-1]["content"]["data"][RUN_MIME]
        self.assertEqual((final["status"], final["step"], final["steps"]), ("completed", 20, 20))
        self.assertEqual([m["step"] for m in final["metrics"]], list(range(1, 21)))
        self.assertIn("resumed from step", " ".join(e["message"] for e in final["events"]))

    def test_second_interrupt_aborts_the_cell_at_once(self):
        out = os.path.join(OUT, "aborted")
        msg_id = self.kc.execute(f"const run2 = await r.run({{ steps: 200, out: {json.dumps(out)} }});\n'not reached'")
        wait_for(lambda: len(read_jsonl(os.path.join(out, "metrics.jsonl"))) >= 1, 120, "a training step")
        # interrupt_request on the control channel (message mode), twice.
        self.send("control", "interrupt_request", {})
        self.send("control", "interrupt_request", {})
        t0 = time.time()
        reply = self.reply_for(msg_id, 30)
        # "At once": within a training step or two (a step can take seconds on a loaded 2-core machine), long before 200 steps.
        self.assertLess(time.time() - t0, 20)
        self.assertEqual(reply["content"]["status"], "error")
        self.assertEqual(reply["content"]["ename"], "KeyboardInterrupt")
        # The run itself still stops at its next step boundary, with a checkpoint.
        wait_for(lambda: [e for e in read_jsonl(os.path.join(out, "events.jsonl")) if e["type"] == "interrupted"], 60, "the run to stop")
        self.assertEqual(self.result_text(self.run_ok("1 + 1")), "2")

    def test_third_interrupt_case_stops_a_busy_loop(self):
        msg_id = self.kc.execute("let spins = 0;\nwhile (true) { spins++; }")
        wait_for(lambda: self.kc.get_iopub_msg(timeout=30)["msg_type"] == "execute_input", 60, "the cell to start")
        time.sleep(1.0)
        self.km.interrupt_kernel()
        reply = self.reply_for(msg_id, 30)
        self.assertEqual(reply["content"]["ename"], "KeyboardInterrupt")
        self.assertEqual(self.result_text(self.run_ok("spins > 0")), "true")


class CommTests(KernelCase):
    def test_runs_comm_lists_follows_and_cancels(self):
        out = os.path.join(OUT, "followed")
        run_id = self.result_text(self.run_ok(f"const bg = await r.start({{ steps: 200, out: {json.dumps(out)} }});\nbg.id"))
        self.assertEqual(self.comm_info(), {})

        comm_id = uuid.uuid4().hex
        self.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "lathe.runs", "data": {}})
        listed = self.comm_data(comm_id, "runs")[-1]["runs"]
        self.assertIn(run_id, [r["id"] for r in listed])
        entry = next(r for r in listed if r["id"] == run_id)
        self.assertEqual(entry["room"], f"run:{run_id}")
        self.assertTrue(entry["live"])
        self.assertEqual(self.comm_info("lathe.runs"), {comm_id: {"target_name": "lathe.runs"}})

        self.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"type": "follow", "id": run_id}})
        self.comm_data(comm_id, "snapshot")
        got = self.comm_data(comm_id, "metric")
        got += self.comm_data(comm_id, "metric")
        steps = [d["metric"]["step"] for d in got if d["type"] == "metric"]
        self.assertEqual(steps, sorted(steps))

        self.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"type": "cancel", "id": run_id}})
        done = self.comm_data(comm_id, "done")[-1]
        self.assertEqual(done["summary"]["status"], "cancelled")
        self.assertTrue(any(re.fullmatch(r"cancelled at step \d+", e["message"]) for e in read_jsonl(os.path.join(out, "events.jsonl"))))

        self.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"type": "follow", "id": "no-such-run"}})
        self.assertIn("no run", self.comm_data(comm_id, "error")[-1]["message"])

        # A malformed request gets an error naming the field, and the comm goes on working.
        self.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"type": "follow"}})
        bad = self.comm_data(comm_id, "error")[-1]
        self.assertEqual((bad["request"], bad["field"]), ("follow", "id"))
        self.assertIn("id: expected a run id", bad["message"])
        self.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"type": "list"}})
        self.assertIn(run_id, [r["id"] for r in self.comm_data(comm_id, "runs")[-1]["runs"]])

        self.send("shell", "comm_close", {"comm_id": comm_id, "data": {}})
        wait_for(lambda: self.comm_info() == {}, 10, "the comm to close")

    def test_unknown_target_is_closed(self):
        comm_id = uuid.uuid4().hex
        self.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "no.such.target", "data": {}})
        end = time.time() + 10
        while time.time() < end:
            msg = self.kc.get_iopub_msg(timeout=10)
            if msg["msg_type"] == "comm_close" and msg["content"]["comm_id"] == comm_id:
                return
        self.fail("no comm_close for an unknown target")


class DisplayTests(KernelCase):
    def test_live_run_display_updates_in_place_and_ends_complete(self):
        out = os.path.join(OUT, "shown")
        msg_id = self.kc.execute(f"const shown = await r.run({{ steps: 6, out: {json.dumps(out)} }});\nshown")
        msgs = self.iopub_until_idle(msg_id, 180)
        self.assertEqual(self.reply_for(msg_id, 10)["content"]["status"], "ok")

        shows = [m for m in msgs if m["msg_type"] == "display_data" and RUN_MIME in m["content"]["data"]]
        self.assertEqual(len(shows), 1)
        display_id = shows[0]["content"]["transient"]["display_id"]
        first = shows[0]["content"]["data"]
        for mime in (RUN_MIME, PLOTLY_MIME, "text/html", "text/plain"):
            self.assertIn(mime, first)
        run_id = first[RUN_MIME]["id"]
        self.assertEqual(first[RUN_MIME]["room"], f"run:{run_id}")

        updates = [m for m in msgs if m["msg_type"] == "update_display_data"]
        self.assertGreaterEqual(len(updates), 2)
        self.assertEqual({u["content"]["transient"]["display_id"] for u in updates}, {display_id})
        # Throttled to about 4 a second (one final update may follow at once); timed by the kernel's send dates.
        sent = [u["header"]["date"].timestamp() for u in updates]
        gaps = [b - a for a, b in zip(sent, sent[1:-1])]
        self.assertTrue(all(g > 0.15 for g in gaps), gaps)

        final = updates[-1]["content"]["data"]
        snap = final[RUN_MIME]
        self.assertEqual(snap["status"], "completed")
        self.assertEqual(snap["step"], 6)
        self.assertEqual([m["step"] for m in snap["metrics"]], [1, 2, 3, 4, 5, 6])
        self.assertEqual(final[PLOTLY_MIME]["data"][0]["x"], [1, 2, 3, 4, 5, 6])
        self.assertIn("step 6/6", final["text/plain"])
        self.assertIn("<svg", final["text/html"])
        # The result line does not repeat the chart.
        self.assertEqual(list(next(m for m in msgs if m["msg_type"] == "execute_result")["content"]["data"]), ["text/plain"])

        # Eval results and data inspection render as tables; a recipe as a card.
        evaluated = self.run_ok("await evaluate.heldOut(shown.dir.path, { batches: 1 })")
        self.assertIn("<table", next(m for m in evaluated if m["msg_type"] == "execute_result")["content"]["data"]["text/html"])
        card = next(m for m in self.run_ok("r") if m["msg_type"] == "execute_result")["content"]["data"]
        self.assertEqual(card[RECIPE_MIME]["stage"], "pretrain")
        self.assertIn("text/html", card)
        report = next(m for m in self.run_ok("await data.inspectData((await r.lock({ steps: 5 })) as recipe.RecipeLock)") if m["msg_type"] == "execute_result")
        self.assertIn("<table", report["content"]["data"]["text/html"])
        self.assertIn("tally", report["content"]["data"]["text/plain"])


class TorchTests(KernelCase):
    def test_torch_run_shows_the_live_chart_and_a_runs_row_like_tfjs(self):
        out = os.path.join(OUT, "torch-shown")
        msg_id = self.kc.execute(f"const ts = await r.run({{ steps: 6, out: {json.dumps(out)}, engine: 'torch' }});\nts.lock.engine")
        msgs = self.iopub_until_idle(msg_id, 180)
        self.assertEqual(self.reply_for(msg_id, 10)["content"]["status"], "ok")
        shows = [m for m in msgs if m["msg_type"] == "display_data" and RUN_MIME in m["content"]["data"]]
        self.assertEqual(len(shows), 1)
        for mime in (RUN_MIME, PLOTLY_MIME, "text/html", "text/plain"):
            self.assertIn(mime, shows[0]["content"]["data"])
        final = [m for m in msgs if m["msg_type"] == "update_display_data"][-1]["content"]["data"]
        self.assertEqual(final[RUN_MIME]["status"], "completed")
        self.assertEqual([m["step"] for m in final[RUN_MIME]["metrics"]], [1, 2, 3, 4, 5, 6])
        self.assertEqual(final[PLOTLY_MIME]["data"][0]["x"], [1, 2, 3, 4, 5, 6])
        self.assertIn("torch", self.result_text(msgs))

        # A torch run in the background: listed and followed over lathe.runs, cancelled at a step boundary with a checkpoint.
        bg_out = os.path.join(OUT, "torch-bg")
        run_id = self.result_text(self.run_ok(f"const tb = await r.start({{ steps: 3000, out: {json.dumps(bg_out)}, engine: 'torch' }});\ntb.id"))
        comm_id = uuid.uuid4().hex
        self.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "lathe.runs", "data": {}})
        entry = next(r for r in self.comm_data(comm_id, "runs")[-1]["runs"] if r["id"] == run_id)
        self.assertTrue(entry["live"])
        self.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"type": "follow", "id": run_id}})
        self.comm_data(comm_id, "snapshot")
        self.comm_data(comm_id, "metric")
        self.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"type": "cancel", "id": run_id}})
        done = self.comm_data(comm_id, "done")[-1]
        self.assertEqual(done["summary"]["status"], "cancelled")
        stopped = done["summary"]["step"]
        self.assertTrue(os.path.exists(os.path.join(bg_out, "checkpoints", str(stopped), "state.json")))
        self.send("shell", "comm_close", {"comm_id": comm_id, "data": {}})


class WebGpuTests(KernelCase):
    """Run with the Vulkan environment of SwiftShader (protocol.test.ts sets it for this case)."""

    def test_webgpu_run_in_the_kernel_matches_cpu(self):
        tiny = "{ model: { dim: 32, layers: 1, heads: 2, context: 32 }, train: { batchSize: 4, warmupSteps: 1, checkpointEvery: 3 }, eval: { every: 0, batches: 1 } }"
        gpu, cpu = os.path.join(OUT, "webgpu-run"), os.path.join(OUT, "webgpu-cpu")
        msgs = self.run_ok(
            f"const tiny = r.with({tiny});\n"
            f"const wg = await tiny.run({{ steps: 3, out: {json.dumps(gpu)}, backend: 'webgpu' }});\n"
            f"await tiny.run({{ steps: 3, out: {json.dumps(cpu)}, backend: 'cpu' }});\n"
            "JSON.stringify({ backend: wg.lock.backend, status: wg.summary?.status })",
            300,
        )
        self.assertEqual(json.loads(self.result_text(msgs).strip("'")), {"backend": "webgpu", "status": "completed"})
        got, want = read_jsonl(os.path.join(gpu, "metrics.jsonl")), read_jsonl(os.path.join(cpu, "metrics.jsonl"))
        self.assertEqual([m["step"] for m in got], [1, 2, 3])
        for g, w in zip(got, want):
            for key in ("loss", "grad_norm"):
                self.assertLess(abs(g[key] - w[key]) / abs(w[key]), 1e-3, (key, g, w))
        printed = "\n".join(str(m["content"]) for m in msgs if m["msg_type"] in ("stream", "error"))
        with open(os.path.join(gpu, "events.jsonl")) as f:
            printed += f.read()
        self.assertNotRegex(printed, r"Dawn validation|Invalid (ComputePipeline|CommandBuffer|BindGroup)|device was lost")


if __name__ == "__main__":
    unittest.main(verbosity=2)

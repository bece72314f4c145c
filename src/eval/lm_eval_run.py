"""Runs lm-evaluation-harness on an HF model folder for `lathe eval --lm-eval` (src/eval/lm-eval.ts).

Reads one JSON request on stdin:
  {"model": DIR, "tasks": [{"yaml": PATH} | {"name": NAME}], "limit": N | null, "batch_size": N,
   "device": "cpu", "samples": bool}
A task file is read with lm-eval's own YAML loader (so `!function` and `include` work), and its
relative `dataset_kwargs.data_files` are taken relative to the file. Built-in task names go to
lm-eval's task index. Prints one JSON object on stdout:
  {"tasks": {name: {"metrics": {"acc,none": x, ...}, "n": effective, "of": original, "file": PATH|null,
                    "output_type": str, "samples": [...]}}, "versions": {...}, "lm_eval": version}
or {"error": message} (exit 2) for bad task files. Progress goes to stderr.
"""
import json
import math
import os
import sys
from pathlib import Path


def fail(message):
    sys.stdout.write(json.dumps({"error": message}))
    sys.exit(2)


def task_config(path):
    from lm_eval.tasks._yaml_loader import load_yaml

    p = Path(path).resolve()
    try:
        cfg = load_yaml(p)
    except Exception as e:  # a YAML syntax error, a bad include or !function
        fail(f"{path}: {e}")
    if not isinstance(cfg.get("task"), str):
        fail(f"{path}: task: missing (every lm-eval task file names its task)")
    if "dataset_path" not in cfg:
        fail(f"{path}: dataset_path: missing (e.g. dataset_path: json with dataset_kwargs.data_files)")
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if files is not None:
        def absolute(f):
            q = Path(f)
            q = q if q.is_absolute() else p.parent / q
            if not q.exists():
                fail(f"{path}: dataset_kwargs.data_files: {f}: no such file (relative paths are read from {p.parent})")
            return str(q)

        if isinstance(files, str):
            files = absolute(files)
        elif isinstance(files, list):
            files = [absolute(f) for f in files]
        elif isinstance(files, dict):
            files = {k: ([absolute(f) for f in v] if isinstance(v, list) else absolute(v)) for k, v in files.items()}
        cfg["dataset_kwargs"] = {**cfg["dataset_kwargs"], "data_files": files}
    return cfg


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plain(v):
    """JSON-safe copy of a sample field (numpy scalars, tuples)."""
    try:
        return json.loads(json.dumps(v, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    except (TypeError, ValueError):
        return str(v)


def main():
    req = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    specs, files, names = [], {}, []
    for t in req["tasks"]:
        if "yaml" in t:
            cfg = task_config(t["yaml"])
            files[cfg["task"]] = str(Path(t["yaml"]).resolve())
            specs.append(cfg)
        else:
            specs.append(t["name"])
            names.append(t["name"])

    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=bool(names))
    if names:
        unknown = [n for n in names if n not in manager.all_tasks]
        if unknown:
            fail(f"--lm-eval: unknown task {unknown[0]}; give a task YAML file, or one of lm-eval's task names")
    out = simple_evaluate(
        model="hf",
        # Lathe models read every document after <|bos|>; the exported tokenizer adds it when asked.
        model_args={"pretrained": req["model"], "dtype": "float32", "device": req.get("device", "cpu"),
                    "add_bos_token": True},
        tasks=specs,
        task_manager=manager,
        limit=req.get("limit"),
        batch_size=req.get("batch_size", 8),
        log_samples=bool(req.get("samples", True)),
        bootstrap_iters=1000,
        random_seed=0,
        numpy_random_seed=1234,
        torch_random_seed=1234,
        fewshot_random_seed=1234,
    )
    tasks = {}
    for name, res in out["results"].items():
        metrics = {k: v for k, v in res.items() if "," in k and number(v)}
        counts = out.get("n-samples", {}).get(name, {})
        samples = []
        for s in (out.get("samples") or {}).get(name, []):
            samples.append({
                "doc_id": s.get("doc_id"),
                "target": plain(s.get("target")),
                "resps": plain(s.get("resps")),
                "filtered_resps": plain(s.get("filtered_resps")),
                "metrics": {m: plain(s[m]) for m in s.get("metrics", []) if m in s},
            })
        tasks[name] = {
            "metrics": metrics,
            "n": counts.get("effective"),
            "of": counts.get("original"),
            "file": files.get(name),
            "output_type": (out.get("configs", {}).get(name) or {}).get("output_type"),
            "samples": samples,
        }
    sys.stdout.write(json.dumps({
        "tasks": tasks,
        "versions": plain(out.get("versions", {})),
        "lm_eval": getattr(lm_eval, "__version__", None),
    }))


if __name__ == "__main__":
    main()

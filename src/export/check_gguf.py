"""llama.cpp side of Lathe's GGUF export checks (run with the project's .venv python).

Reads one JSON request on stdin: {"jobs": [job, ...]}, and prints one JSON list of results.
Jobs:
  {"op": "read", "path": P, "tensors": [name, ...]}
      Reads P with the `gguf` package's GGUFReader (llama.cpp's reference reader): the scalar
      metadata, every tensor's name, ggml type and shape (ne order), and the dequantized values of
      the named tensors (numpy order, flattened).
  {"op": "llama", "path": P, "n_ctx": N, "texts": [str], "prompts": [str], "max_tokens": M,
   "windows": [[ids]], "chat": [messages]}
      Loads P with llama-cpp-python (llama.cpp, CPU). Returns llama.cpp's tokens for each text
      (special tokens parsed, no bos), the greedy completion (temperature 0) of each prompt, the
      summed next-token negative log-likelihood and the count of predicted tokens of each window
      (each evaluated from an empty cache), the metadata llama.cpp read, and the chat template
      from the file rendered by llama-cpp-python's Jinja2 formatter.
"""
import json
import sys


def read(job):
    import numpy as np
    from gguf import GGUFReader
    from gguf.constants import GGUFValueType
    from gguf.quants import dequantize

    r = GGUFReader(job["path"])
    meta = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        t = field.types[0] if field.types else None
        if t == GGUFValueType.ARRAY:
            meta[name] = {"array": len(field.data)}
        elif t == GGUFValueType.STRING:
            meta[name] = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            meta[name] = field.parts[field.data[0]].tolist()[0]
    tensors = []
    values = {}
    wanted = set(job.get("tensors", []))
    for t in r.tensors:
        tensors.append({"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape]})
        if t.name in wanted:
            values[t.name] = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(-1).tolist()
    return {"meta": meta, "tensors": tensors, "values": values, "alignment": r.alignment}


def llama(job):
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(model_path=job["path"], n_ctx=job["n_ctx"], n_batch=job["n_ctx"], n_threads=1,
                logits_all=True, verbose=False, seed=0)
    res = {
        "n_vocab": llm.n_vocab(),
        "n_ctx_train": llm.n_ctx_train() if hasattr(llm, "n_ctx_train") else None,
        "metadata": dict(llm.metadata),
        "bos": llm.token_bos(),
        "eos": llm.token_eos(),
        "texts": [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in job.get("texts", [])],
        "completions": [],
        "windows": [],
    }
    for p in job.get("prompts", []):
        out = llm.create_completion(p, max_tokens=job.get("max_tokens", 16), temperature=0.0, top_k=0, top_p=1.0,
                                    min_p=0.0, repeat_penalty=1.0, seed=0)
        res["completions"].append(out["choices"][0]["text"])
    for w in job.get("windows", []):
        llm.reset()
        llm.eval(w[:-1])
        logits = np.asarray(llm.scores[: len(w) - 1], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        logz = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
        targets = np.asarray(w[1:])
        nll = float((logz - logits[np.arange(len(targets)), targets]).sum())
        res["windows"].append({"nll": nll, "tokens": len(targets)})
    if job.get("chat"):
        template = llm.metadata["tokenizer.chat_template"]
        fmt = Jinja2ChatFormatter(template=template, eos_token="<|eos|>", bos_token="<|bos|>")
        res["chat"] = fmt(messages=job["chat"]).prompt
    return res


def main():
    req = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    ops = {"read": read, "llama": llama}
    out = [ops[j["op"]](j) for j in req["jobs"]]
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()

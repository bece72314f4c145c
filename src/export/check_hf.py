"""Hugging Face side of Lathe's export/import checks (run with the project's .venv python).

Reads one JSON request on stdin: {"jobs": [job, ...]}, and prints one JSON list of results.
Jobs:
  {"op": "check", "dir": D, "prompt": [ids], "max_new_tokens": N, "texts": [str], "chat": [messages]}
      Loads D with AutoModelForCausalLM (float32, eager attention) and AutoTokenizer; returns the
      logits of every prompt position, the greedy completion, the tokenizer's ids for each text
      (no special tokens added) and the chat template rendering. "tokenizer": false skips AutoTokenizer;
      "config": true also returns the loaded config as a dict.
  {"op": "make", "dir": D, "arch": "llama"|"mistral"|"qwen2"|"qwen3"|"mixtral"|"qwen3_moe",
   "dtype": "float32"|"bfloat16"|"float16", "shard": "20KB"|null, "tied": bool, "seed": int,
   "texts": [str], "vocab_size": int|"tokenizer", "head_dim": int, "config": {field: value}}
      Writes a tiny random model of that architecture with save_pretrained (its transformers config
      class, `config` overriding the small defaults; biases and norm gains randomised so a mix-up
      shows in the logits), and a ByteLevel BPE tokenizer.json trained with `tokenizers` on the texts.
  {"op": "peft", "base": D, "adapter": A, "prompt": [ids]}
      Loads D with AutoModelForCausalLM, then the PEFT adapter A with PeftModel.from_pretrained;
      returns the base's logits, the adapted model's, the adapter's LoRA modules and PEFT's
      complaints (missing or unexpected adapter keys), which must be empty for a faithful load.
"""
import json
import sys


def check(job):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(job["dir"], dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tok = AutoTokenizer.from_pretrained(job["dir"]) if job.get("tokenizer", True) else None
    ids = torch.tensor([job["prompt"]], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids).logits[0]
        out = model.generate(ids, max_new_tokens=job.get("max_new_tokens", 10), do_sample=False)
    completion = out[0, ids.shape[1]:].tolist()
    res = {
        "class": type(model).__name__,
        "logits": logits.tolist(),
        "greedy": completion,
        "eos": model.generation_config.eos_token_id,
        "texts": [tok(t, add_special_tokens=False)["input_ids"] for t in job.get("texts", [])] if tok else [],
    }
    if job.get("config"):
        res["config"] = json.loads(model.config.to_json_string())
    if tok and job.get("chat"):
        res["chat"] = tok.apply_chat_template(job["chat"], tokenize=False, add_generation_prompt=True)
    return res


def peft(job):
    import warnings

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(job["base"], dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = torch.tensor([job["prompt"]], dtype=torch.long)
    with torch.no_grad():
        base = model(ids).logits[0].tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, job["adapter"])
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(ids).logits[0].tolist()
    modules = sorted(n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}))
    complaints = [str(w.message) for w in caught if "adapter" in str(w.message).lower() or "key" in str(w.message).lower()]
    return {"base": base, "adapted": adapted, "modules": modules, "complaints": complaints,
            "class": type(peft_model).__name__}


def make(job):
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    torch.manual_seed(job.get("seed", 0))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=job.get("tokenizer_vocab", 300), min_frequency=2, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(job["texts"], trainer=trainer)
    vocab = job.get("vocab_size", 320)
    if vocab == "tokenizer":
        vocab = tok.get_vocab_size()
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=job.get("tied", False),
                  bos_token_id=0, eos_token_id=1, initializer_range=0.2, rms_norm_eps=1e-5)
    if job.get("head_dim"):
        common["head_dim"] = job["head_dim"]
    arch = job.get("arch", "llama")
    names = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "mixtral": "Mixtral",
             "qwen3_moe": "Qwen3Moe"}[arch]
    if arch == "mixtral":
        common.update(num_local_experts=4, num_experts_per_tok=2)
    if arch == "qwen3_moe":
        common.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24)
    common.update(job.get("config", {}))
    config = getattr(transformers, names + "Config")(**common)
    model = getattr(transformers, names + "ForCausalLM")(config)
    # Norm gains away from 1 and biases away from 0, so a mix-up shows in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[job.get("dtype", "float32")]
    model = model.to(dtype)
    kw = {"max_shard_size": job["shard"]} if job.get("shard") else {}
    model.save_pretrained(job["dir"], **kw)
    tok.save(job["dir"] + "/tokenizer.json")
    return {"tokenizer_vocab": tok.get_vocab_size(), "vocab_size": vocab}


def main():
    req = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    ops = {"check": check, "make": make, "peft": peft}
    out = [ops[j["op"]](j) for j in req["jobs"]]
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()

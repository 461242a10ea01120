#!/usr/bin/env python3
"""Seeds for fuzz_adapter_load: small PEFT adapters (LoRA, rsLoRA with
rank/alpha patterns, modules_to_save, prefix tuning, prefix with projection
MLP, prompt tuning) for the fuzz target's tiny base (hidden 8, 2 layers,
2 heads, 1 KV head of dim 4, ffn 12, vocab 10), with random values made here.
Layout per seed: u16 LE config length, config JSON, safetensors bytes.
Run from this folder: python3 gen_adapter_seeds.py"""
import json, os, random, struct

H, L, NH, KV, D, F, V = 8, 2, 2, 1, 4, 12, 10
IN = {"q_proj": H, "k_proj": H, "v_proj": H, "o_proj": NH * D, "gate_proj": H, "up_proj": H, "down_proj": F}
OUT = {"q_proj": NH * D, "k_proj": KV * D, "v_proj": KV * D, "o_proj": H, "gate_proj": F, "up_proj": F, "down_proj": H}
PARENT = {m: ("mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn") for m in IN}
rnd = random.Random(1234)


def st_bytes(tensors):
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (shape, vals) in sorted(tensors.items()):
        raw = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def vals(n):
    return [rnd.uniform(-1, 1) for _ in range(n)]


def lora(mods, r, extra=None, ranks=None):
    t = {}
    for l in range(L):
        for m in mods:
            rr = (ranks or {}).get(m, r)
            p = "base_model.model.model.layers.%d.%s.%s" % (l, PARENT[m], m)
            t[p + ".lora_A.weight"] = ([rr, IN[m]], vals(rr * IN[m]))
            t[p + ".lora_B.weight"] = ([OUT[m], rr], vals(OUT[m] * rr))
    t.update(extra or {})
    return t


def seed(name, cfg, tensors):
    c = json.dumps(cfg).encode()
    with open(os.path.join("corpus", "fuzz_adapter_load", name), "wb") as f:
        f.write(struct.pack("<H", len(c)) + c + st_bytes(tensors))


os.makedirs(os.path.join("corpus", "fuzz_adapter_load"), exist_ok=True)
base = {"task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False}
seed("lora_qv", dict(base, peft_type="LORA", r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]),
     lora(["q_proj", "v_proj"], 2))
seed("lora_all_rs", dict(base, peft_type="LORA", r=3, lora_alpha=6, use_rslora=True, target_modules=list(IN),
                         rank_pattern={"down_proj": 2}, alpha_pattern={"layers.1.self_attn.o_proj": 1.5}),
     lora(list(IN), 3, ranks={"down_proj": 2}))
seed("lora_lm_head", dict(base, peft_type="LORA", r=1, lora_alpha=1, target_modules="all-linear",
                          modules_to_save=["lm_head", "embed_tokens"]),
     lora(["o_proj"], 1, {"base_model.model.lm_head.weight": ([V, H], vals(V * H)),
                         "base_model.model.model.embed_tokens.weight": ([V, H], vals(V * H))}))
P = 3
seed("prefix", {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": P, "token_dim": KV * D,
                "num_layers": L, "num_attention_heads": KV, "prefix_projection": False},
     {"prompt_embeddings": ([P, L * 2 * KV * D], vals(P * L * 2 * KV * D))})
E = 5
seed("prefix_mlp", {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": P, "token_dim": KV * D,
                    "num_layers": L, "num_attention_heads": KV, "prefix_projection": True, "encoder_hidden_size": E},
     {"prompt_embeddings": ([P, KV * D], vals(P * KV * D)), "transform.0.weight": ([E, KV * D], vals(E * KV * D)),
      "transform.0.bias": ([E], vals(E)), "transform.2.weight": ([L * 2 * KV * D, E], vals(L * 2 * KV * D * E)),
      "transform.2.bias": ([L * 2 * KV * D], vals(L * 2 * KV * D))})
seed("prompt", {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "token_dim": H},
     {"prompt_embeddings": ([4, H], vals(4 * H))})

#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_tokenizer and fuzz_spm_model.

Small hand-made inputs only (no fixture vocabularies): texts for the encoder,
and tiny SentencePiece ModelProto / GGUF v3 files built here from
sentencepiece_model.proto field numbers and ggml's GGUF layout.
Run from anywhere: python3 tests/fuzz/gen_tokenizer_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SP = "\u2581"


def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def ld(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def piece(text, score, typ=1):
    msg = ld(1, text.encode()) + key(2, 5) + struct.pack("<f", score)
    if typ != 1:
        msg += key(3, 0) + varint(typ)
    return ld(1, msg)


def spm_model(pieces, byte_fallback=False, dummy=True, extra_ws=False, unk_surface=None):
    out = b"".join(piece(*p) for p in pieces)
    if byte_fallback:
        out += b"".join(piece("<0x%02X>" % b, 0.0, 6) for b in range(256))
    tr = key(3, 0) + varint(2)                     # model_type = BPE
    tr += key(35, 0) + varint(1 if byte_fallback else 0)
    tr += key(41, 0) + varint(1) + key(43, 0) + varint(-1)   # bos_id, pad_id = -1
    if unk_surface is not None:
        tr += ld(44, unk_surface.encode())
    nm = ld(1, b"identity") + key(3, 0) + varint(int(dummy)) + key(4, 0) + varint(int(extra_ws))
    return out + ld(2, tr) + ld(3, nm)


BASE = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), (SP, -10.0),
        ("a", -11.0), ("b", -12.0), ("c", -13.0), ("ab", -1.0), ("bc", -2.0),
        ("abc", -3.0), (SP + "a", -4.0), ("aa", -5.0), ("<sep>", 0.0, 4),
        ("xy", -0.5, 5), ("x", -14.0), ("y", -15.0), (SP + "xy", -6.0),
        ("H", -20.0), ("e", -21.0), ("l", -22.0), ("o", -23.0), ("He", -7.0),
        ("ll", -8.0), ("llo", -9.0), (SP + "He", -9.5)]


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(model, pieces, version=3):
    kv = [gstr("tokenizer.ggml.model") + struct.pack("<I", 8) + gstr(model)]
    kv.append(gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, len(pieces)) +
              b"".join(gstr(p[0]) for p in pieces))
    kv.append(gstr("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, len(pieces)) +
              b"".join(struct.pack("<f", p[1]) for p in pieces))
    kv.append(gstr("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, len(pieces)) +
              b"".join(struct.pack("<i", p[2] if len(p) > 2 else 1) for p in pieces))
    kv.append(gstr("tokenizer.ggml.bos_token_id") + struct.pack("<II", 4, 1))
    kv.append(gstr("tokenizer.ggml.add_space_prefix") + struct.pack("<IB", 7, 1))
    return b"GGUF" + struct.pack("<IQQ", version, 0, len(kv)) + b"".join(kv)


def write(folder, name, data):
    d = os.path.join(HERE, "corpus", folder)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    write("fuzz_spm_model", "bpe_small.model", spm_model(BASE))
    write("fuzz_spm_model", "bpe_bytes.model", spm_model(BASE[:12], byte_fallback=True))
    write("fuzz_spm_model", "bpe_extra_ws.model",
          spm_model(BASE, dummy=False, extra_ws=True, unk_surface="<?>"))
    write("fuzz_spm_model", "vocab_llama.gguf", gguf("llama", BASE))
    write("fuzz_spm_model", "vocab_gpt2.gguf", gguf("gpt2", BASE[:6]))
    texts = {
        "en.txt": "Hello world, this is a test.\n",
        "spaces.txt": "  leading and  trailing   \t\n",
        "zh.txt": "大语言模型的参数高效微调",
        "emoji.txt": "ok \U0001F600\u200d\U0001F32B\ufe0f done",
        "specials.txt": "<s> </s> <unk> <0x41> " + SP + SP + "x",
        "code.txt": "def f(x):\n    return x @ A.T * 2.0\n",
        "digits.txt": "2023年5月 3.14159 1,000,000",
    }
    for name, t in texts.items():
        write("fuzz_tokenizer", name, t.encode())
    write("fuzz_tokenizer", "invalid.bin", b"a\xff\xfe\xc0\x80\xed\xa0\x80\xe4\xb8 \xf4\x90\x80\x80\x00z")


if __name__ == "__main__":
    main()

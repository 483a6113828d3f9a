"""Tiny GGUF files written in-process with the ``gguf`` package (no download), shared by the GGUF tests and the
real-LM benchmark's test: a one-layer Llama, Q8_0 matrices, a byte-level BPE tokenizer with a chat template.
"""

from __future__ import annotations

import gguf

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_tiny_gguf(path: str, hidden: int = 32, inter: int = 64, heads: int = 2, kv_heads: int = 1, seed: int = 0):
    """A one-layer Llama in GGUF (Q8_0 matrices, float32 norms, tied embeddings) with a byte-level tokenizer."""
    rng = __import__("numpy").random.default_rng(seed)
    b2u = _bytes_to_unicode()
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [b2u[b] for b in range(256)] + [a + b for a, b in merges]
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(tokens) - 3))
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def tensor(name: str, shape: tuple[int, ...], quantised: bool = True) -> None:
        data = (rng.standard_normal(shape) * 0.2).astype("float32")
        if quantised:
            q = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quants.quantize(data, q), raw_dtype=q)
        else:
            w.add_tensor(name, data)

    head_dim = hidden // heads
    tensor("token_embd.weight", (len(tokens), hidden))
    tensor("blk.0.attn_norm.weight", (hidden,), quantised=False)
    tensor("blk.0.attn_q.weight", (hidden, hidden))
    tensor("blk.0.attn_k.weight", (head_dim * kv_heads, hidden))
    tensor("blk.0.attn_v.weight", (head_dim * kv_heads, hidden))
    tensor("blk.0.attn_output.weight", (hidden, hidden))
    tensor("blk.0.ffn_norm.weight", (hidden,), quantised=False)
    tensor("blk.0.ffn_gate.weight", (inter, hidden))
    tensor("blk.0.ffn_up.weight", (inter, hidden))
    tensor("blk.0.ffn_down.weight", (hidden, inter))
    tensor("output_norm.weight", (hidden,), quantised=False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path

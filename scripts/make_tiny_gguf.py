#!/usr/bin/env python3
"""Write a tiny, valid, deterministic llama-architecture GGUF model for tests.

The model is random-weight nonsense (it "speaks" random English words), but it
is a real GGUF file that llama.cpp (llama-server, llama-cpp-python, xllamacpp)
loads and runs like any other model, so tests can exercise the whole HTTP
surface (/v1/chat/completions with and without streaming, /v1/models, /health,
/props, /slots) without downloading weights.

    pip install gguf==0.19.0    # the official writer from the llama.cpp repo
    python scripts/make_tiny_gguf.py tiny.gguf     # 0.67 MB, well under a second
    # or from Python: make_tiny_gguf.write_model(path, ctx=2048, seed=0)

scripts/llama_server.py generates it on demand into .cache/models/ and serves it.

What is inside:
  * arch "llama": 2 layers, n_embd 64, 4 heads, n_ff 128, F32 weights.
  * tokenizer "llama" (SentencePiece-style): <unk> <s> </s>, ChatML control
    tokens <|im_start|> <|im_end|>, byte-fallback tokens <0x00>..<0xFF> (so any
    UTF-8 input tokenizes), single characters, and 110 "▁word" tokens (with
    their prefixes, so known words tokenize to one token each).
  * tokenizer.chat_template: ChatML, so /v1/chat/completions works.
  * A "bias channel": dimension 0 of the residual stream is held at a constant
    by the weights, and output.weight uses it to push the logits of all
    non-word tokens (control, byte, character, prefix) far down. Generated
    text is therefore always whole words (valid UTF-8) and never hits an
    end-of-generation token: every completion runs to max_tokens
    (finish_reason "length") unless the request sets "stop". With
    temperature 0 the output is deterministic.

The same --seed always gives a byte-identical file.
"""
import argparse
import os
import time
from pathlib import Path

WORDS = """the a an and or of to in on for with from by is are was be it this that
you we they he she model server local llama tiny test token stream chat hello world
notebook kernel cell python jupyter reply answer question data result value time
fast slow small big new old good first last next one two three four five yes no
can will may run runs send sends read write load open close start stop port host
health slot prompt text word line code file list name say says think thinks make
simple quiet bright green blue red cat dog tree river cloud sun moon star""".split()

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_vocab():
    """Return (tokens, scores, types, ids of tokens the model may generate)."""
    import gguf
    T = gguf.TokenType
    toks = [("<unk>", T.UNKNOWN), ("<s>", T.CONTROL), ("</s>", T.CONTROL),
            ("<|im_start|>", T.CONTROL), ("<|im_end|>", T.CONTROL)]
    toks += [(f"<0x{b:02X}>", T.BYTE) for b in range(256)]
    chars = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()"
    words = ["▁" + w for w in dict.fromkeys(WORDS)]
    # SentencePiece only merges adjacent pieces that are themselves tokens, so
    # add every prefix ("▁w", "▁wo", "▁wor") to let "▁word" become one token.
    prefixes = [w[:k] for w in words for k in range(2, len(w))]
    pieces = list(dict.fromkeys(p for p in prefixes if p not in words))
    toks += [(t, T.NORMAL) for t in list(chars) + pieces]
    first_word = len(toks)
    toks += [(w, T.NORMAL) for w in words]
    tokens = [t for t, _ in toks]
    types = [int(k) for _, k in toks]
    # SentencePiece merge priority: longer pieces score higher.
    scores = [float(len(t)) if k == T.NORMAL else 0.0 for t, k in toks]
    return tokens, scores, types, range(first_word, len(toks))


def write_model(out, *, ctx: int = 2048, seed: int = 0, name: str = "tiny-llama-test") -> Path:
    """Write the model to `out` atomically (temp file + rename), so concurrent writers never see half a file."""
    import gguf  # heavy (numpy + gguf): only when a model is actually written
    import numpy as np

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n_embd, n_head, n_layer, n_ff = 64, 4, 2, 128
    tokens, scores, types, allowed = build_vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def writes_to_residual(*shape):  # output projections: never touch dim 0
        m = rand(*shape, std=0.1)
        m[0, :] = 0.0
        return m

    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_eot_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)
    # No SentencePiece space prefix: with it, llama.cpp's JSON-schema engine cannot start and every
    # json_schema / response_format request fails with 400 "Failed to initialize samplers".
    w.add_add_space_prefix(False)

    # Embeddings: dim 0 is the constant bias channel, the rest is random.
    emb = rand(n_vocab, n_embd, std=1.0)
    emb[:, 0] = 4.0
    w.add_tensor("token_embd.weight", emb)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "attn_q.weight", rand(n_embd, n_embd, std=0.3))
        w.add_tensor(p + "attn_k.weight", rand(n_embd, n_embd, std=0.3))
        w.add_tensor(p + "attn_v.weight", rand(n_embd, n_embd, std=0.3))
        w.add_tensor(p + "attn_output.weight", writes_to_residual(n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "ffn_gate.weight", rand(n_ff, n_embd, std=0.3))
        w.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd, std=0.3))
        w.add_tensor(p + "ffn_down.weight", writes_to_residual(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    # Output head: whole words get random logits; every other token (control,
    # byte, character, prefix) gets a large negative logit through dim 0.
    head = rand(n_vocab, n_embd, std=0.3)
    head[:, 0] = -15.0
    head[list(allowed), 0] = 0.0
    w.add_tensor("output.weight", head)

    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="tiny-llama.gguf")
    ap.add_argument("--ctx", type=int, default=2048, help="context length (n_ctx_train)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="tiny-llama-test")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = write_model(a.out, ctx=a.ctx, seed=a.seed, name=a.name)
    n_vocab = len(build_vocab()[0])
    print(f"wrote {out}: vocab {n_vocab}, ctx {a.ctx}, seed {a.seed}, "
          f"{out.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()

"""One engine's run for ``python -m polyvtd.bench llm``, in a process of its own so that its
peak RSS (and on the GPU its device memory) is its own: load the model, warm up, then time
prefill of the prompt ids and greedy decoding, ``repeats`` times (best kept). Run by path (not as
``polyvtd._bench_llm_child``) so that llama.cpp's process never imports polyvtd. Prints one JSON
line."""

import json
import resource
import sys
import time


# Each engine: (a function that starts a new sequence and returns its `feed(ids) -> next greedy
# token`, the bytes its weights take or None).


def polyvtd_engine(path, dtype, threads, device):
    import polyvtd as pv

    model = pv.Transformer.from_pretrained(path, dtype=dtype, device=device)
    sessions = []

    def session():
        sessions[:] = [model._native.session()]
        return sessions[0].feed

    # On the GPU: the resident weights and one sequence's caches and activations.
    weight_bytes = model.gpu_weight_bytes + model._native.session().gpu_bytes if device == "gpu" else model.memory_bytes
    return session, weight_bytes


def transformers_engine(path, dtype, threads, device):
    """HF transformers' LlamaForCausalLM in float16 on CUDA, built from the very weights polyvtd
    loads (a GGUF's blocks dequantised; Q/K rows already in HF's order) and the same config."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import polyvtd as pv

    source = pv.Transformer.from_pretrained(path, dtype=dtype)
    c = source.config
    config = LlamaConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                         num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
                         num_key_value_heads=c["num_key_value_heads"], head_dim=c["head_dim"], rms_norm_eps=c["rms_norm_eps"],
                         rope_theta=c["rope_theta"], max_position_embeddings=c["max_position_embeddings"],
                         tie_word_embeddings=c["tie_word_embeddings"], attention_bias=c["attention_bias"])
    net = source.network

    def tensor(store):
        return torch.from_numpy(np.asarray(store.dequantize(), dtype=np.float32).reshape(store.shape))

    state = {"model.embed_tokens.weight": tensor(net.layer(0, 0, 0, 0).parameters[0])}
    for b in range(c["num_hidden_layers"]):
        p, x = f"model.layers.{b}.", b + 1
        attention = net.layer(0, 0, x, 1).parameters
        mlp = net.layer(0, 0, x, 4).parameters
        state[p + "input_layernorm.weight"] = tensor(net.layer(0, 0, x, 0).parameters[0])
        state[p + "post_attention_layernorm.weight"] = tensor(net.layer(0, 0, x, 3).parameters[0])
        for name, store in zip(["q", "k", "v", "o"], attention):
            state[p + f"self_attn.{name}_proj.weight"] = tensor(store)
        for name, store in zip(["q", "k", "v"], attention[4:7]):
            state[p + f"self_attn.{name}_proj.bias"] = tensor(store)
        for name, store in zip(["gate", "up", "down"], mlp):
            state[p + f"mlp.{name}_proj.weight"] = tensor(store)
    head = c["num_hidden_layers"] + 1
    state["model.norm.weight"] = tensor(net.layer(0, 0, head, 0).parameters[0])
    if not c["tie_word_embeddings"]:
        state["lm_head.weight"] = tensor(net.layer(0, 0, head, 1).parameters[0])
    del source, net
    model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=False)
    model = model.to("cuda", torch.float16).eval()
    cache = [None]

    @torch.no_grad()
    def feed(ids):
        out = model(torch.tensor([ids], device="cuda"), past_key_values=cache[0], use_cache=True)
        cache[0] = out.past_key_values
        return int(out.logits[0, -1].argmax())

    def session():
        cache[0] = None
        return feed

    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    return session, weight_bytes


def llama_cpp_engine(path, dtype, threads, device):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False)

    def feed(ids):
        llm.eval(ids)
        return int(np.argmax(llm.scores[llm.n_tokens - 1]))

    def session():
        llm.reset()
        return feed

    return session, None


ENGINES = {"polyvtd": polyvtd_engine, "llama.cpp": llama_cpp_engine, "transformers": transformers_engine}


def device_memory_used():
    """Bytes in use on GPU 0 (NVML), or None without an NVIDIA driver and nvidia-ml-py."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used
    except Exception:
        return None


def peak_rss() -> int:
    """This process's peak resident set in bytes: VmHWM, the high-water mark of its own address
    space. (getrusage's ru_maxrss survives exec on Linux, so a child would report its parent's
    peak when that was higher.)"""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def main(args):
    memory_before = device_memory_used()
    device = args.get("device", "cpu")
    session, weight_bytes = ENGINES[args["engine"]](args["model"], args.get("dtype"), args["threads"], device)
    ids, new_tokens = args["ids"], args["new_tokens"]
    session()(ids[:8])  # warm-up: first-touch page faults and thread start-up are not timed
    best_prefill = best_decode = 0.0
    tokens = []
    for _ in range(args["repeats"]):
        feed = session()
        started = time.perf_counter()
        token = feed(ids)
        prefill_s = time.perf_counter() - started
        tokens = [token]
        started = time.perf_counter()
        for _ in range(new_tokens - 1):
            token = feed([token])
            tokens.append(token)
        decode_s = time.perf_counter() - started
        best_prefill = max(best_prefill, len(ids) / prefill_s)
        best_decode = max(best_decode, (new_tokens - 1) / decode_s)
    memory_after = device_memory_used()
    device_memory = None if memory_before is None or memory_after is None else memory_after - memory_before
    print(json.dumps({"prefill": best_prefill, "decode": best_decode, "peak_rss": peak_rss(),
                      "weight_bytes": weight_bytes, "device_memory": device_memory, "tokens": tokens}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

"""One engine's run for ``python -m polyvtd.bench llm``, in a process of its own so that its
peak RSS is its own: load the model, warm up, then time prefill of the prompt ids and greedy
decoding, ``repeats`` times (best kept). Run by path (not as ``polyvtd._bench_llm_child``) so
that a peer's process never imports polyvtd. Prints one JSON line."""

import json
import resource
import sys
import time


# Each engine: (a function that starts a new sequence and returns its `feed(ids) -> next greedy
# token`, the bytes its weights take or None).


def polyvtd_engine(path, dtype, threads):
    import polyvtd as pv

    model = pv.Transformer.from_pretrained(path, dtype=dtype)

    return lambda: model._native.session().feed, model.memory_bytes


def llama_cpp_engine(path, dtype, threads):
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


ENGINES = {"polyvtd": polyvtd_engine, "llama.cpp": llama_cpp_engine}


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
    session, weight_bytes = ENGINES[args["engine"]](args["model"], args.get("dtype"), args["threads"])
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
    print(json.dumps({"prefill": best_prefill, "decode": best_decode, "peak_rss": peak_rss(),
                      "weight_bytes": weight_bytes, "tokens": tokens}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

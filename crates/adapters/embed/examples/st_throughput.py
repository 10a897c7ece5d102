"""The Python baseline for `embed_throughput`: sentence-transformers embedding the same
sentences (written by `embed_throughput --dump-sentences FILE`) with batch 32 on the
CPU, best of N rounds, one thread per core.

    /tmp/st-venv/bin/python crates/adapters/embed/examples/st_throughput.py \
        .trellis/models/all-minilm-l6-v2 /tmp/sentences.txt [rounds]

Prints sentences/s and, last, one JSON line.
"""

import json
import os
import sys
import time

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    model_dir, sentences_file = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    with open(sentences_file, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        model.encode(texts, batch_size=32)
        best = max(best, len(texts) / (time.perf_counter() - started))
    print(f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}")
    print(f"threads {threads}, sentences {len(texts)}, batch 32: {best:.1f} sentences/s")
    print(json.dumps({"bench": "st_throughput", "sentences": len(texts), "threads": threads, "sentences_per_s": best}))


if __name__ == "__main__":
    main()

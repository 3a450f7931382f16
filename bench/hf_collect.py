"""Collection throughput of a transformers model: tokens/s and the statistics' share of the forward,
with and without --layers all.

A randomly initialised model of a real architecture's size (default: GPT-2 small, 124 M parameters,
vocabulary 50,257, context 1,024) is saved beside a BPE tokenizer trained on the synthetic corpus
(its vocabulary is smaller: the embedding's extra rows are classes never seen, as in padded
vocabularies; the class statistics still span all 50,257 rows). Timings are those collect.json
records (forward and statistics timed separately; process CPU time too, fairer on a shared machine).

    python bench/hf_collect.py --arch gpt2 --max-tokens 8192 --out bench/results/hf_collect_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

ARCHS = {
    "gpt2": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
    "gpt2-tiny": dict(model_type="gpt2", n_embd=64, n_layer=4, n_head=4, n_positions=256, vocab_size=2048),
    "llama-160m": dict(model_type="llama", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       num_key_value_heads=4, intermediate_size=2048, max_position_embeddings=2048, vocab_size=32000),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="gpt2", choices=sorted(ARCHS))
    ap.add_argument("--max-tokens", type=int, default=8192, help="positions per pass (train and val)")
    ap.add_argument("--context", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--stories", type=int, default=3000)
    ap.add_argument("--layers", default="all", help="the per-layer run's --layers (the other is the head alone)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    import torch
    import transformers

    from lcfast.benchmarks import Stopwatch, write_json
    from lcfast.data.synth import write_corpus
    from lcfast.data.tokenize import tokenize_files
    from lcfast.pipeline.collect import CollectOptions, collect

    work = Path(tempfile.mkdtemp(prefix="lcfast-hf-bench-"))
    try:
        write_corpus(work / "corpus", n_stories=args.stories, seed=0)
        cfg = dict(ARCHS[args.arch])
        vocab = min(cfg["vocab_size"], 8192)
        tokenize_files([work / "corpus" / "stories.txt"], f"train:{vocab}", work / "tok", val_fraction=0.2)
        mt = cfg.pop("model_type")
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(mt, **cfg))
        model.save_pretrained(work / "model")
        shutil.copyfile(work / "tok" / "tokenizer.json", work / "model" / "tokenizer.json")
        n_params = sum(p.numel() for p in model.parameters())
        del model
        rows = []
        # warm-up (thread pools, kernel choice) so that the first measured collect is not penalised
        collect(work / "model", data=work / "tok", out=work / "warm", progress=False,
                opts=CollectOptions(device=args.device, batch_size=args.batch_size, max_tokens=1, context=args.context,
                                    dtype=args.dtype))
        for layers in (None, args.layers):
            opts = CollectOptions(device=args.device, batch_size=args.batch_size, max_tokens=args.max_tokens,
                                  context=args.context, layers=layers, dtype=args.dtype)
            with Stopwatch() as sw:
                (s,) = collect(work / "model", data=work / "tok", out=work / f"c_{layers}", opts=opts, progress=False)
            tr = s["passes"]["train"]
            rows.append({
                "layers": layers or "head only", "slots": len(s.get("layout", {}).get("slots", ["head"])),
                "context": s["context"], "train_tokens": tr["tokens"], "train_tokens_per_s": tr["tokens_per_s"],
                "train_forward_s": tr["forward_s"], "train_stats_s": tr["stats_s"],
                "stats_share_of_forward": tr["stats_share_of_forward"],
                "stats_share_of_forward_cpu": tr["stats_share_of_forward_cpu"],
                "val_tokens_per_s": s["passes"]["val"]["tokens_per_s"],
                "stats_bytes": s["stats_bytes"], "wall_s": sw.wall_s,
            })
            print(json.dumps(rows[-1]))
        res = {"arch": args.arch, "n_params": n_params, "n_classes": ARCHS[args.arch]["vocab_size"],
               "tokenizer_vocab": vocab, "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
               "date": time.strftime("%Y-%m-%d"), "rows": rows}
        write_json(args.out, res, indent=2)
        print(json.dumps(res, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The harness's default settings, in one import-light place (the CLI builds its parser from them without
loading torch, onnxruntime or the compiled extension)."""

from __future__ import annotations

# The engines the harness runs in-process, in the order tables show them; DeepSparse is added separately.
PEERS = ("sparsebert", "onnxruntime", "pytorch")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # as sparsebert.engine.INPUT_NAMES

# Engine benchmarks: >= 20 timed runs make a median and a p10 worth quoting; 3 warm-ups let every engine
# allocate its buffers and settle its thread pool.
RUNS = 20
WARMUP = 3
# ONNX Runtime's pool spins ~40 ms after each run on the machine this was tuned on (measured as CPU time
# burnt while the caller sleeps); 60 ms lets it go idle before the next engine's timed call.
PAUSE_MS = 60.0
PROFILE_RUNS = 10

SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97)

# Kernel benchmark: N x K of BERT-base's linears (attention 768x768, FFN up 3072x768, FFN down 768x3072) and
# BERT-large's FFN (1024x4096, 4096x1024), at a short and a long batch of tokens.
KERNEL_SHAPES = ((768, 768), (3072, 768), (768, 3072), (1024, 4096), (4096, 1024))
KERNEL_TOKENS = (128, 1024)
KERNEL_LAYOUTS = ("dense", "unstructured", "block4", "block4_int8")
# An int8 layout's yardstick: one VNNI dot product (vpdpbusd) does 64 multiply-adds where an fp32 FMA does 16, at
# the FMA's rate on the cores measured (Intel Ice Lake / Sapphire Rapids, AMD Zen 4), so its peak is 4x the FMA's.
INT8_PEAK_FACTOR = 4
KERNEL_THREADS = (1, 2)
KERNEL_SPARSITY = 0.9

# How engines are timed (engine_bench.run_engine_bench): "interleaved" in one process (the default: same-moment
# ratios on a drifting machine), "isolated" each alone in its own process, or both, isolated first.
MODES = ("interleaved", "isolated", "both")
MODE = "interleaved"
MODE_ORDER = {"interleaved": ("interleaved",), "isolated": ("isolated",), "both": ("isolated", "interleaved")}

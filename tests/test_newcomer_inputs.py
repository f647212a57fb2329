"""A newcomer's mistakes and questions: padding without a mask, a batch given as token lists, pipelines given a
dict or None, a file without a tokenizer or pooling, an unpruned model, submodules reached as attributes."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import sparsebert
from sparsebert import SparseEngine
from sparsebert.cli import main
from sparsebert.convert.report import ExportReport, LinearRow
from sparsebert.spelling import SPELLINGS, command_line, option

from conftest import checkpoint_with_tokenizer, make_model

EXIT_ERROR = 2


def cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def plain_export(tmp_path_factory):
    """A random unpruned BERT exported from a model object (no tokenizer, no pooling)."""
    path = tmp_path_factory.mktemp("newcomer") / "plain.sbert"
    sparsebert.export(make_model("base", seed=4, vocab_size=300), path, verbose=False)
    return path


# ------------------------------------------------------------------------------------------- engine.run

def test_padding_without_a_mask_warns(plain_export):
    engine = SparseEngine.load(plain_export, num_threads=1)
    padded = np.array([[101, 7, 20, 102], [101, 5, 0, 0]])
    with pytest.warns(UserWarning, match="pad token id 0 after other tokens, but no attention_mask"):
        engine.run({"input_ids": padded})
    with pytest.warns(UserWarning, match="no attention_mask"):
        engine.run([padded])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.run({"input_ids": padded, "attention_mask": (padded != 0).astype(np.int64)})  # masked: silent
        engine.run({"input_ids": np.array([[0, 0, 7, 9], [3, 4, 5, 6]])})  # no pad after a real token: silent


def test_the_warning_reads_the_models_pad_id(tmp_path):
    # RoBERTa pads with 1; a 0 after text is a token like any other.
    transformers = pytest.importorskip("transformers")
    config = transformers.RobertaConfig(hidden_size=16, num_attention_heads=2, intermediate_size=20,
                                        num_hidden_layers=1, vocab_size=50, max_position_embeddings=20)
    path = tmp_path / "roberta.sbert"
    sparsebert.export(transformers.RobertaModel(config).eval(), path, verbose=False)
    engine = SparseEngine.load(path, num_threads=1)
    assert engine.pad_token_id == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.run({"input_ids": np.array([[0, 7, 0, 0]])})
    with pytest.warns(UserWarning, match="pad token id 1"):
        engine.run({"input_ids": np.array([[0, 7, 1, 1]])})


@pytest.mark.parametrize("inputs", [
    [[101, 7592, 2088, 102], [101, 2054, 2003, 102]],  # the README's ids as a plain list of token lists
    [[101, 7592, 102], [101, 2054, 2003, 102], [101, 3, 102], [101, 4, 102]],  # more lists than inputs
    [101, 7592, 102],  # one flat sequence
    (np.array([101, 7592, 102]),),  # one 1-D array
])
def test_a_list_of_token_lists_is_explained(plain_export, inputs):
    engine = SparseEngine.load(plain_export, num_threads=1)
    with pytest.raises(ValueError, match=r"reads a list as \(input_ids, attention_mask, token_type_ids\).*one array"):
        engine.run(inputs)


# ------------------------------------------------------------------------------------------- pipelines

@pytest.fixture(scope="module")
def with_tokenizer(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("newcomer_tok")
    _, ckpt = checkpoint_with_tokenizer("base", root, minilm_dir)
    path = root / "with_tokenizer.sbert"
    sparsebert.export(ckpt, path, verbose=False)
    return path


@pytest.mark.parametrize("task", ["feature-extraction", "sentence-embedding"])
@pytest.mark.parametrize("bad", [{"a text": 1}, None, b"bytes", 42])
def test_pipelines_refuse_what_is_no_list_of_texts(with_tokenizer, task, bad):
    pipe = sparsebert.pipeline(task, with_tokenizer, num_threads=1)
    with pytest.raises(TypeError, match=r"takes a string or a list of strings, got"):
        pipe(bad, pooling="mean")
    with pytest.raises(TypeError, match=r"tokenize takes a string or a list of strings"):
        pipe.tokenize(bad)
    assert len(pipe(("one", "two"), pooling="mean")) == 2  # any list-like of texts still works


# ------------------------------------------------------------------------------------------- export and info

@pytest.mark.parametrize("kind", ["tokenizers.Tokenizer", "fast tokenizer", "tokenizer.json", "directory"])
def test_export_of_a_model_object_carries_a_given_tokenizer(tmp_path, minilm_dir, kind):
    if kind == "tokenizers.Tokenizer":
        tokenizers = pytest.importorskip("tokenizers")
        tokenizer = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    elif kind == "fast tokenizer":
        transformers = pytest.importorskip("transformers")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    else:
        tokenizer = minilm_dir / "tokenizer.json" if kind == "tokenizer.json" else minilm_dir
    path = tmp_path / "m.sbert"
    sparsebert.export(make_model("base", seed=2, vocab_size=30522, max_position_embeddings=64), path,
                      verbose=False, tokenizer=tokenizer)
    pipe = sparsebert.pipeline("feature-extraction", path, num_threads=1)
    assert pipe("hello world").shape == (4, 40)  # [CLS] hello world [SEP]


def test_cli_export_takes_a_tokenizer_and_info_says_so(tmp_path, minilm_dir, capsys):
    ckpt = tmp_path / "ckpt"
    make_model("base", seed=2, vocab_size=30522, max_position_embeddings=64).save_pretrained(ckpt)
    out = tmp_path / "m.sbert"
    assert cli("export", ckpt, out) == 0
    assert cli("info", out) == 0
    info = capsys.readouterr().out
    assert "tokenizer: no — pipelines need one: pass --tokenizer PATH" in info
    assert "sentence pooling: none recorded (sentence-embedding: pass --pooling mean or --pooling cls)" in info
    assert cli("run", "feature-extraction", out, "hello") == EXIT_ERROR
    err = capsys.readouterr().err
    assert "sparsebert export --tokenizer PATH" in err and "pass --tokenizer PATH" in err and "=" not in err, err

    assert cli("export", ckpt, out, "--tokenizer", minilm_dir / "tokenizer.json") == 0
    assert cli("info", out) == 0
    assert "tokenizer: yes (vocab 30522)" in capsys.readouterr().out
    assert cli("run", "sentence-embedding", out, "hello") == EXIT_ERROR
    err = capsys.readouterr().err
    assert "pass --pooling mean or --pooling cls" in err and "pooling=" not in err, err
    assert cli("run", "sentence-embedding", out, "hello", "--pooling", "mean") == 0
    capsys.readouterr()
    assert cli("export", ckpt, out, "--config", ckpt / "config.json") == EXIT_ERROR
    assert "error: --config is only for ONNX sources" in capsys.readouterr().err


def test_info_names_a_sentence_transformers_recipe(minilm_dir, tmp_path, capsys):
    out = tmp_path / "minilm.sbert"
    assert cli("export", minilm_dir, out) == 0
    capsys.readouterr()
    assert cli("info", out) == 0
    info = capsys.readouterr().out
    assert "tokenizer: yes (vocab 30522)" in info
    assert "sentence pooling: mean (normalized, max 256 tokens)" in info


def test_the_python_api_keeps_naming_keywords(plain_export):
    with pytest.raises(ValueError, match=r"pass pipeline\(\.\.\., tokenizer=\.\.\.\)"):
        sparsebert.pipeline("feature-extraction", plain_export)
    with command_line():
        assert option("pooling") == SPELLINGS["pooling"][1]
    assert option("pooling") == SPELLINGS["pooling"][0]  # restored after the command


def test_an_unpruned_export_says_it_is_dense(plain_export, tmp_path, capsys):
    model = make_model("base", seed=4, vocab_size=300)
    report = sparsebert.export(model, tmp_path / "dense.sbert", verbose=False)
    assert "essentially dense" in report.notes and "ONNX Runtime" in report.notes
    assert cli("info", plain_export) == 0
    assert "essentially dense" in capsys.readouterr().out
    sparsebert.pruning.prune_bert_(model, 0.9)
    pruned = sparsebert.export(model, tmp_path / "pruned.sbert", verbose=False)
    assert "essentially dense" not in (pruned.notes or "")


def test_the_size_line_counts_the_whole_model(tmp_path):
    model = sparsebert.pruning.prune_bert_(make_model("base", seed=4, vocab_size=3000), 0.9)
    report = sparsebert.export(model, tmp_path / "m.sbert", verbose=False, compact=False)  # every weight kept
    params = sum(p.numel() for p in model.parameters())
    assert report.dense_model_bytes == 4 * params  # every fp32 parameter of the checkpoint, embeddings included
    first = report.summary().splitlines()[0]
    ratio = report.dense_model_bytes / report.file_bytes
    assert first.startswith("whole model: ") and f"({ratio:.2f}x smaller)" in first, first
    # The linear layers alone look far better: that figure must not be the headline.
    assert report.dense_bytes / report.packed_bytes > 2 * ratio


def test_the_size_line_without_a_file():
    row = LinearRow("l", (4, 4), nnz=4, sparsity=0.75, block_fill=1.0, layout="unstructured", bytes=40)
    assert "whole model" not in ExportReport([row]).summary()  # unknown: not claimed
    assert ExportReport([row], other_bytes=40).summary().startswith(
        "whole model: 80 B packed vs 120 B dense fp32, embeddings included (1.50x smaller)")


# ------------------------------------------------------------------------------------------- the package

def test_public_submodules_are_attributes():
    script = ("import sys, sparsebert\n"
              "assert 'torch' not in sys.modules and 'sparsebert.pruning' not in sys.modules\n"
              "print(sparsebert.pruning.prune_bert_.__name__, sparsebert.tuning.Tuning.__name__,\n"
              "      sparsebert.convert.export.__name__, sparsebert.kernels.pack.__name__)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["prune_bert_", "Tuning", "export", "pack"]
    root = Path(sparsebert.__path__[0])
    public = {p.stem if p.name != "__init__.py" else p.parent.name
              for p in [*root.glob("*.py"), *root.glob("*/__init__.py")] if not p.name.startswith("_")
              or p.name == "__init__.py"} - {"sparsebert"}
    assert public == set(sparsebert.SUBMODULES), "list every public submodule in sparsebert.SUBMODULES"
    with pytest.raises(AttributeError):
        sparsebert.no_such_module  # noqa: B018

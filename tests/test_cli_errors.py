"""The command line on a user's mistakes and a hostile environment: every one ends in one line
``sparsebert CMD: error: ...`` and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

import sparsebert  # noqa: E402
from sparsebert.cli import main  # noqa: E402

from conftest import checkpoint_with_tokenizer  # noqa: E402

EXIT_ERROR = 2


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_dir):
    """Checkpoint directories (random models over MiniLM's tokenizer) and their exports, by kind."""
    root = tmp_path_factory.mktemp("cli_errors")
    made = {}
    for kind, positions in (("base", 64), ("sequence_classification", 64), ("question_answering", 512)):
        _, ckpt = checkpoint_with_tokenizer(kind, root, minilm_dir, max_position_embeddings=positions)
        sparsebert.export(ckpt, root / f"{kind}.sbert", verbose=False)
        made[kind] = (ckpt, root / f"{kind}.sbert")
    return made


def sparsebert_cli(*args, stdin=b"", stdout=subprocess.PIPE, timeout=120, preexec_fn=None):
    """The command in its own process (a crash, hang or traceback shows as such), with bytes in and out."""
    return subprocess.run([sys.executable, "-m", "sparsebert.cli", *map(str, args)], input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=timeout, preexec_fn=preexec_fn)


def one_line_error(err: str, command: str, *fragments: str) -> None:
    assert "Traceback" not in err and "panicked" not in err, err
    assert len(err.strip().splitlines()) == 1, f"expected one line, got:\n{err}"
    assert err.startswith(f"sparsebert {command}: error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def fails_in_one_line(capsys, argv, *fragments):
    assert main([*map(str, argv)]) == EXIT_ERROR
    one_line_error(capsys.readouterr().err, argv[0], *fragments)


# ------------------------------------------------------------------------------------------- export

def test_calibration_texts_that_are_not_utf8(models, tmp_path, capsys):
    ckpt, _ = models["base"]
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"fine\ncaf\xe9\n")
    fails_in_one_line(capsys, ["export", ckpt, tmp_path / "m.sbert", "--quantize", "int8", "--calibration", texts],
                      f"calibration file {texts} is not UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]  # no calibration files left behind


# ------------------------------------------------------------------------------------------- run

def test_tokenizers_that_are_not_tokenizers(models, tmp_path, capsys):
    _, model = models["base"]
    (tmp_path / "empty_dir").mkdir()
    files = {"random.bin": os.urandom(4096), "notes.txt": b"hello\n", "broken.json": b"{not json",
             "refused.json": b'{"version": "1.0", "model": 3}', "list.json": b"[1, 2]",
             "deep.json": b"[" * 100_000 + b"]" * 100_000, "shallow_deep.json": b'{"a":' * 200 + b"1" + b"}" * 200}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name in [*files, "empty_dir", "missing.json"]:
        fails_in_one_line(capsys, ["run", "feature-extraction", model, "hi", "--tokenizer", tmp_path / name],
                          name)


def test_undecodable_arguments(models, capsys):
    _, model = models["base"]
    undecoded = os.fsdecode(b"caf\xe9")  # how Python passes a non-UTF-8 argument
    fails_in_one_line(capsys, ["run", "feature-extraction", model, undecoded], "not valid Unicode")


@pytest.mark.parametrize("argv", [["run", "feature-extraction", "m.sbert", "hi"], ["demo"],
                                  ["bench", "--random", "tiny"]])
def test_thread_counts_beyond_the_engine_fail_before_any_work(argv, capsys):
    for threads in ("2147483648", "99999999999999999999999", "0", "x"):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--threads", threads])
        assert exit_.value.code == EXIT_ERROR
        one_line_error(capsys.readouterr().err, argv[0], "--threads")


def test_bench_outputs_that_are_directories_fail_before_benchmarking(tmp_path, capsys):
    # One line: no "[bench] preparing the model" before it.
    fails_in_one_line(capsys, ["bench", "--random", "tiny", "--json", tmp_path], str(tmp_path), "a directory")


def test_usage_errors_are_one_line(capsys):
    for argv, fragment in ((["frobnicate"], "invalid choice"), ([], "required"),
                           (["run", "feature-extraction"], "required: MODEL"),
                           (["run", "feature-extraction", "m.sbert", "--frob"], "unrecognized arguments: --frob"),
                           (["export", "a", "b", "--layout", "sideways"], "--layout")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "error: " in err and fragment in err and "--help" in err, err


@pytest.mark.skipif(not (os.path.exists("/dev/full") and not os.path.isfile("/dev/full")), reason="no /dev/full")
def test_standard_output_on_a_full_disk(models):
    _, model = models["sequence_classification"]
    for argv in (["info", model], ["run", "text-classification", model, "hello"]):
        with open("/dev/full", "wb") as full:
            proc = sparsebert_cli(*argv, stdout=full)
        assert proc.returncode == EXIT_ERROR
        one_line_error(proc.stderr.decode(), argv[0], "cannot write to standard output: No space left on device")

"""The command line on a user's mistakes and a hostile environment: every one ends in one line
``sparsebert CMD: error: ...`` and exit status 2, never a traceback; options go before or after the texts; and
``sparsebert run`` streams its results."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
from pathlib import Path

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


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- export

def test_export_refuses_destinations_it_cannot_or_must_not_write(models, tmp_path, capsys, monkeypatch):
    ckpt, _ = models["base"]
    before = {p.name: digest(p) for p in ckpt.iterdir() if p.is_file()}
    (tmp_path / "linked").symlink_to(ckpt)
    os.symlink(ckpt / "model.safetensors", tmp_path / "symlink.sbert")
    os.link(ckpt / "model.safetensors", tmp_path / "hardlink.sbert")
    calibration = tmp_path / "texts.txt"
    calibration.write_text("one text\n")
    os.mkfifo(tmp_path / "fifo")
    read_by_the_export = [ckpt / "model.safetensors", ckpt / "config.json", ckpt / "tokenizer.json",
                          tmp_path / "symlink.sbert", tmp_path / "hardlink.sbert",
                          tmp_path / "linked" / "model.safetensors", ckpt / ".." / ckpt.name / "config.json"]
    for destination in read_by_the_export:
        with pytest.raises(ValueError, match="is a file the export reads"):
            sparsebert.export(ckpt, destination, verbose=False)
        fails_in_one_line(capsys, ["export", ckpt, destination], str(destination), "a file the export reads")
    with pytest.raises(ValueError, match="a file the export reads"):
        sparsebert.export(ckpt, calibration, verbose=False, quantize="int8", calibration=calibration)
    fails_in_one_line(capsys, ["export", ckpt, tmp_path, "--layout", "dense"], str(tmp_path), "is a directory")
    fails_in_one_line(capsys, ["export", ckpt, tmp_path / "fifo"], "not a regular file")
    assert (tmp_path / "fifo").exists() and not (tmp_path / "fifo").is_file()
    assert {p.name: digest(p) for p in ckpt.iterdir() if p.is_file()} == before
    # An unwritable directory (root may write anywhere: its answer is simulated).
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    fails_in_one_line(capsys, ["export", ckpt, tmp_path / "new.sbert"], str(tmp_path), "cannot create files")
    monkeypatch.undo()
    # Beside the checkpoint's files, a new name is fine.
    assert main(["export", str(ckpt), str(ckpt / "model.sbert")]) == 0
    capsys.readouterr()
    (ckpt / "model.sbert").unlink()


def test_a_failed_write_names_the_destination(models, tmp_path, capsys, monkeypatch):
    ckpt, _ = models["base"]
    destination = tmp_path / "m.sbert"
    from sparsebert.convert import exporter

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() or fsync() raises it: no file name

    monkeypatch.setattr(exporter, "write_model", disk_full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        sparsebert.export(ckpt, destination, verbose=False)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(destination)
    fails_in_one_line(capsys, ["export", ckpt, destination], f"{destination}: No space left on device")

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(exporter, "write_model", denied)
    fails_in_one_line(capsys, ["export", ckpt, destination], f"{destination}: Permission denied")
    assert not destination.exists()


def test_a_file_size_limit_hit_while_writing_is_one_line(models, tmp_path):
    # A real failing write: the process may not write files past 64 KiB (EFBIG, with SIGXFSZ ignored).
    ckpt, _ = models["base"]

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    out = tmp_path / "out"
    out.mkdir()
    proc = sparsebert_cli("export", ckpt, out / "m.sbert", preexec_fn=limit_file_size)
    assert proc.returncode == EXIT_ERROR
    one_line_error(proc.stderr.decode(), "export", str(out / "m.sbert"), "File too large")
    assert list(out.iterdir()) == []  # no destination, no temporary file left behind


def test_calibration_texts_that_are_not_utf8(models, tmp_path, capsys):
    ckpt, _ = models["base"]
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"fine\ncaf\xe9\n")
    fails_in_one_line(capsys, ["export", ckpt, tmp_path / "m.sbert", "--quantize", "int8", "--calibration", texts],
                      f"calibration file {texts} is not UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]  # no calibration files left behind


def test_checkpoint_configs_that_are_not_objects(models, tmp_path, capsys):
    ckpt, _ = models["base"]
    for name, text in (("list", "[1, 2]"), ("deep", "[" * 100_000 + "]" * 100_000),
                       ("deep_object", '{"a":' * 100_000 + "1" + "}" * 100_000)):
        directory = tmp_path / name
        directory.mkdir()
        os.symlink(ckpt / "model.safetensors", directory / "model.safetensors")
        (directory / "config.json").write_text(text)
        fails_in_one_line(capsys, ["export", directory, tmp_path / "o.sbert"], str(directory / "config.json"))
    # A sentence-transformers modules.json nested too deeply is no sentence-transformers directory.
    directory = tmp_path / "st"
    directory.mkdir()
    for path in ckpt.iterdir():
        os.symlink(path, directory / path.name)
    (directory / "modules.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["export", str(directory), str(tmp_path / "st.sbert")]) == 0
    capsys.readouterr()


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


def test_standard_input_that_is_not_utf8(models):
    _, model = models["sequence_classification"]
    proc = sparsebert_cli("run", "text-classification", model, "--batch-size", "1",
                          stdin="\ufefffirst line\r\n\n".encode() + b"caf\xe9 au lait\nthird\n")
    assert proc.returncode == EXIT_ERROR
    one_line_error(proc.stderr.decode(), "run", "standard input line 3 is not UTF-8")
    printed = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [line["text"] for line in printed] == ["first line"]  # BOM and CRLF removed, then the bad line stops it


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


def test_a_question_too_long_for_a_window(models):
    _, model = models["question_answering"]
    context = "The treaty was signed in Geneva on 12 March 1998. " * 60
    proc = sparsebert_cli("run", "question-answering", model, context, "--question", "why " * 300)
    assert proc.returncode == EXIT_ERROR and proc.stdout == b""
    one_line_error(proc.stderr.decode(), "run", "cannot fit the question (300 tokens)", "at most 252 tokens")
    proc = sparsebert_cli("run", "question-answering", model, context, "--question", "why " * 300,
                          "--doc-stride", "32")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["result"]["answer"]


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


def test_options_before_or_after_the_texts(models, capsys):
    _, qa = models["question_answering"]
    context = "The treaty was signed in Geneva on 12 March 1998."
    outputs = []
    for argv in (["run", "question-answering", qa, "--question", "Where?", context],
                 ["run", "question-answering", qa, context, "--question", "Where?"],
                 ["run", "--question", "Where?", "question-answering", qa, context]):
        assert main(list(map(str, argv))) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2] and json.loads(outputs[0])["context"] == context
    _, base = models["base"]
    assert main(["run", "feature-extraction", str(base), "one", "--pooling", "mean", "two", "--normalize"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["one", "two"] and len(lines[0]["result"]) == 40


def test_run_streams_each_batch_as_it_is_computed(models):
    # One batch in, its result out, while standard input is still open: nothing waits for the end of the input.
    _, model = models["sequence_classification"]
    proc = subprocess.Popen([sys.executable, "-m", "sparsebert.cli", "run", "text-classification", str(model),
                             "--batch-size", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)  # unbuffered: readline reads no further than a line
    try:
        for batch in (["one", "two"], ["three", "four"]):
            proc.stdin.write("".join(f"{text}\n" for text in batch).encode())
            proc.stdin.flush()
            for text in batch:
                ready, _, _ = select.select([proc.stdout], [], [], 120)
                assert ready, "no result while the input stays open: sparsebert run does not stream"
                assert json.loads(proc.stdout.readline())["text"] == text
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


@pytest.mark.skipif(not (os.path.exists("/dev/full") and not os.path.isfile("/dev/full")), reason="no /dev/full")
def test_standard_output_on_a_full_disk(models):
    _, model = models["sequence_classification"]
    for argv in (["info", model], ["run", "text-classification", model, "hello"]):
        with open("/dev/full", "wb") as full:
            proc = sparsebert_cli(*argv, stdout=full)
        assert proc.returncode == EXIT_ERROR
        one_line_error(proc.stderr.decode(), argv[0], "cannot write to standard output: No space left on device")

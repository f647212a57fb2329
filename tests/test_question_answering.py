"""The question-answering pipeline against transformers 4's algorithm (transformers 5 dropped the pipeline), written
out plainly, on a random QA model over the real all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402

from conftest import SENTENCES  # noqa: E402

LONG_CONTEXT = " ".join(SENTENCES * 4) + " The treaty was signed in Geneva on 12 March 1998 by 14 delegations."


def reference_answers(model, ckpt, question, context, max_seq_len, doc_stride, top_k=1, max_answer_len=15,
                      handle_impossible_answer=False):
    """transformers 4's question-answering pipeline, written out plainly (transformers 5 dropped it): the HF
    tokenizer's overflowing windows, the torch model's logits, every span scored by brute force."""
    # As the pipeline: windows no longer than the model's positions, a stride of at most half a window.
    max_seq_len = min(max_seq_len, model.config.max_position_embeddings)
    doc_stride = min(doc_stride, max_seq_len // 2)
    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    enc = tok(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    token_type_ids=enc["token_type_ids"])
    answers, null = {}, 1e6
    for w in range(enc["input_ids"].shape[0]):
        ids = enc.sequence_ids(w)
        wanted = np.array([(sid == 1 or t == 0) and bool(enc["attention_mask"][w, t]) for t, sid in enumerate(ids)])
        probs = []
        for logits in (out.start_logits[w].numpy(), out.end_logits[w].numpy()):
            x = np.where(wanted, logits.astype(np.float64), -10000.0)
            probs.append(np.exp(x - x.max()) / np.exp(x - x.max()).sum())
        p_start, p_end = probs
        null = min(null, p_start[0] * p_end[0])
        p_start[0] = p_end[0] = 0.0
        spans = sorted(((p_start[i] * p_end[j], i, j) for i in range(len(ids)) for j in range(i, len(ids))
                        if j - i < max_answer_len and wanted[i] and wanted[j]), reverse=True)[:top_k]
        for score, i, j in spans:
            lo = enc.word_to_chars(w, enc.token_to_word(w, i), sequence_index=1).start
            hi = enc.word_to_chars(w, enc.token_to_word(w, j), sequence_index=1).end
            text = context[lo:hi]
            if text in answers:
                answers[text]["score"] += score
            else:
                answers[text] = {"score": score, "start": lo, "end": hi, "answer": text}
    ranked = list(answers.values())
    if handle_impossible_answer:
        ranked.append({"score": null, "start": 0, "end": 0, "answer": ""})
    return sorted(ranked, key=lambda a: a["score"], reverse=True)[:top_k]


@pytest.mark.slow
@pytest.mark.parametrize("max_seq_len, doc_stride", [(384, 128), (64, 40), (48, 16), (40, 0)])
def test_question_answering_matches_the_reference(exported, max_seq_len, doc_stride):
    model, ckpt, path = exported("question_answering")
    pipe = sparsebert.pipeline("question-answering", path)
    questions = ["Where was the treaty signed?", "Who signed it?"]
    for question in questions:
        theirs = reference_answers(model, ckpt, question, LONG_CONTEXT, max_seq_len, doc_stride, top_k=3)
        ours = pipe(question=question, context=LONG_CONTEXT, max_seq_len=max_seq_len, doc_stride=doc_stride, top_k=3)
        assert [(a["answer"], a["start"], a["end"]) for a in ours] == \
            [(a["answer"], a["start"], a["end"]) for a in theirs]
        np.testing.assert_allclose([a["score"] for a in ours], [a["score"] for a in theirs], rtol=1e-4)
        for a in ours:
            assert LONG_CONTEXT[a["start"]:a["end"]] == a["answer"]
    one = pipe({"question": questions[0], "context": LONG_CONTEXT}, max_seq_len=48, doc_stride=16)
    both = pipe([{"question": q, "context": LONG_CONTEXT} for q in questions], max_seq_len=48, doc_stride=16)
    assert isinstance(one, dict) and both[0] == one
    for context in ("Short.", LONG_CONTEXT):
        null = pipe(question=questions[0], context=context, handle_impossible_answer=True, top_k=2)
        ref = reference_answers(model, ckpt, questions[0], context, 384, 128, top_k=2, handle_impossible_answer=True)
        assert [(a["answer"], a["start"]) for a in null] == [(a["answer"], a["start"]) for a in ref]


def test_question_answering_bad_calls(exported):
    _, _, path = exported("question_answering")
    pipe = sparsebert.pipeline("question-answering", path)
    with pytest.raises(TypeError):
        pipe("just a string")
    with pytest.raises(ValueError, match="max_answer_len"):
        pipe(question="q", context="c", max_answer_len=0)
    with pytest.raises(ValueError, match="cannot fit the question"):
        pipe(question="why " * 100, context="because", max_seq_len=32)


def test_cli_run_question_answering(exported, capsys):
    import json

    from sparsebert.cli import main

    _, _, path = exported("question_answering")
    assert main(["run", "question-answering", str(path), LONG_CONTEXT, "--question", "Who signed it?"]) == 0
    line = json.loads(capsys.readouterr().out)
    expected = sparsebert.pipeline("question-answering", path)(question="Who signed it?", context=LONG_CONTEXT)
    assert line["result"] == expected
    assert main(["run", "question-answering", str(path), "text"]) == 2
    assert "--question" in capsys.readouterr().err

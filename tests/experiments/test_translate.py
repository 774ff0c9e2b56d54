"""experiments/translate.py: a --quick run end to end (metrics, the caches giving the same tokens, samples,
plot, a checkpoint that loads against the script's model, decoding by length classes giving each sentence
what decoding it alone does), an LSTM run with subword units on a --pairs file reported on the validation
split with beam search, the side-by-side speed of length buckets, and the metrics against hand-computed
values."""

import json

import jax
import numpy as np
import pytest

from purenet.models.search import greedy_search
from purenet.training.checkpoint import load_checkpoint
from tests.helpers import is_png, load_experiment


@pytest.fixture(scope="module")
def translate():
    return load_experiment("translate")


def test_quick_transformer_run_reports_metrics_speed_and_a_loadable_checkpoint(translate, tmp_path, monkeypatch):
    metrics = translate.main(["--quick", "--out-dir", str(tmp_path)])
    out = tmp_path / "transformer"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert is_png(out / "loss.png")
    assert metrics["steps"] == translate.QUICK["steps"] and metrics["report_split"] == "test"
    assert metrics["report_sentences"] == translate.QUICK["report_sentences"]
    assert 0 <= metrics["exact_match"] <= 1 and metrics["char_accuracy"] <= 1 and 0 <= metrics["chrf"] <= 100
    assert set(metrics["decode_speed"]) == {"full", "none"}  # decode_speed asserts equal tokens
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in metrics["decode_speed"].values())
    assert len(metrics["samples"]) == translate.QUICK["samples"] and not metrics["pre_ln"]

    assert metrics["units"] == "bpe" and metrics["buckets"] == translate.QUICK["buckets"]
    assert metrics["train_target_tokens"] > 0 and metrics["train_tokens_per_s"] > 0

    args = translate.parse_args(["--quick"])
    train, validation, test, source, target = translate.load_data(args)
    lengths = translate.token_lengths(train + validation + test, source, target)
    assert metrics["token_lengths"] == [lengths.src, lengths.tgt]
    assert lengths.src <= args.max_src_len + 1 and lengths.tgt < args.max_tgt_len + 1  # pieces, not characters
    model = translate.build_model(args, source.size, target.size)
    checkpoint = load_checkpoint(out / "checkpoint.npz", like=translate.checkpoint_template(model, args, lengths))
    assert checkpoint.step == args.steps
    assert sum(p.size for p in jax.tree.leaves(checkpoint.params)) == metrics["num_params"]
    # Decoding by length (sorted, batches of 16 each cut to its width, the last one filled) gives every
    # sentence the tokens it gets decoded in one batch at the full width, in the input's order.
    monkeypatch.setattr(translate, "DECODE_BATCH", 16)
    sources = [s for s, _ in test[:40]]
    src = translate.source_ids(sources, source, lengths.src)
    by_length = translate.decode_ids(model, checkpoint.params, src, args,
                                     lengths._replace(widths=(4, 8, lengths.src)))
    np.testing.assert_array_equal(by_length, greedy_search(model, checkpoint.params, src, max_len=lengths.tgt))


def test_lstm_with_subword_units_on_a_pairs_file_with_beam_search_on_the_validation_split(translate, tmp_path):
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    french = ["un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix"]
    lines = [f"{a} {b}\t{c} {d}\n" for a, c in zip(words, french) for b, d in zip(words, french)]
    (tmp_path / "numbers.tsv").write_text("".join(lines), encoding="utf-8")
    flags = ["--quick", "--model", "lstm", "--pairs", str(tmp_path / "numbers.tsv"), "--report", "validation",
             "--beam", "2", "--vocab-size", "40", "--out-dir", str(tmp_path)]
    metrics = translate.main(flags)
    assert metrics["model"] == "lstm" and metrics["decoding"] == "beam 2" and metrics["report_split"] == "validation"
    assert metrics["units"] == "bpe" and metrics["vocabularies"] == [40, 40]
    assert metrics["token_lengths"][1] < len("quatre quatre") + 1  # pieces, not characters
    assert all(isinstance(s["output"], str) for s in metrics["samples"])  # decoded text
    assert len(list((tmp_path / "lstm").glob("*-bpe40-*.model"))) == 2  # the vocabularies, beside the run
    assert set(metrics["decode_speed"]) == {"full", "none"}
    assert metrics["train_pairs"] + metrics["validation_pairs"] + metrics["test_pairs"] == 100
    # The checkpoint, evaluated again without training, gives the same translations.
    again = translate.main(flags + ["--from-checkpoint", str(tmp_path / "lstm" / "checkpoint.npz")])
    assert again["samples"] == metrics["samples"] and again["chrf"] == metrics["chrf"]
    assert again["steps"] == metrics["steps"] and again["train_seconds"] == 0
    assert (tmp_path / "lstm" / "evaluated" / "metrics.json").exists()


def test_bucket_speed_times_both_forms_side_by_side(translate, tmp_path):
    result = translate.main(["--quick", "--bucket-speed", "2", "--buckets", "2", "--out-dir", str(tmp_path)])
    assert set(result["tokens_per_s"]) == {"fixed", "2 buckets"} and result["ratio"] > 0
    fixed, classes = result["shapes"]["fixed"], result["shapes"]["2 buckets"]
    assert len(fixed) == 1 and len(classes) == 2 and max(c[0] for c in classes) == fixed[0][0]


def test_metrics_against_hand_computed_values(translate):
    assert translate.edit_distance("kitten", "sitting") == 3
    assert translate.edit_distance("", "abc") == 3 and translate.edit_distance("abc", "") == 3
    assert translate.edit_distance("flaw", "lawn") == 2 and translate.edit_distance("same", "same") == 0
    hypotheses, references = ["le chat", "il pleut", "bonjour"], [["le chat", "la chatte"], ["il neige"], ["salut"]]
    assert translate.exact_match(hypotheses, references) == pytest.approx(1 / 3)
    # distances to the closest references: 0 (7 chars), 4 of 8 ("pleut" -> "neige"), 7 of 5
    assert translate.char_accuracy(hypotheses, references) == pytest.approx(1 - 11 / 20)
    assert translate.chrf(["le chat"], [["le chat", "la chatte"]]) == pytest.approx(100.0)
    assert 0 < translate.chrf(hypotheses, references) < 100
    assert translate.grouped([("a", "x"), ("b", "y"), ("a", "z")]) == (["a", "b"], [["x", "z"], ["y"]])
    rng = np.random.default_rng(0)
    for _ in range(20):  # against the textbook dynamic programme
        a, b = ("".join(rng.choice(list("abc"), rng.integers(0, 7))) for _ in range(2))
        table = np.arange(len(b) + 1)
        for i, ch in enumerate(a, 1):
            previous, table = table, np.zeros(len(b) + 1, int)
            table[0] = i
            for j, other in enumerate(b, 1):
                table[j] = min(previous[j] + 1, table[j - 1] + 1, previous[j - 1] + (ch != other))
        assert translate.edit_distance(a, b) == table[-1]

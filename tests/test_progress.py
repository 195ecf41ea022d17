"""Progress bars of long phases: on stderr, labelled by the phase, off under ``progress=False``."""

from __future__ import annotations

import fairrl.console as console
from fairrl.console import label_progress, progress_scope
from fairrl.eval.likelihood import greedy_generate, option_logprobs
from tests.tiny import tiny_policy

PROMPTS = [[{"role": "user", "content": w}] for w in ("a b", "c d", "e f")]


def test_inner_bars_are_labelled_by_their_phase_and_go_to_stderr(monkeypatch, capsys):
    monkeypatch.setattr(console, "INNER_DELAY_S", 0.0)  # show at once (normally only after 2 s)
    tok, model = tiny_policy()
    with progress_scope("eval bbq_heldout"):
        option_logprobs(model, tok, PROMPTS, [["yes", "no"]] * 3, batch_size=2)
        label_progress("eval reasoning")
        greedy_generate(model, tok, PROMPTS, max_new_tokens=2, batch_size=2)
    out = capsys.readouterr()
    assert out.out == ""
    assert "eval bbq_heldout: option likelihoods" in out.err and "/3 [" in out.err  # 3 prompts
    assert "eval reasoning: generating" in out.err
    assert console._LABEL.get() == ""  # the scope restored the outer label


def test_progress_false_silences_every_bar_below(monkeypatch, capsys):
    monkeypatch.setattr(console, "INNER_DELAY_S", 0.0)
    tok, model = tiny_policy()
    with progress_scope("eval", enabled=False):
        greedy_generate(model, tok, PROMPTS, max_new_tokens=2, batch_size=2)
        with progress_scope(enabled=True):  # an inner scope cannot turn bars back on
            console.progress_bar(3, 0, "steps").close()
    assert capsys.readouterr().err == ""

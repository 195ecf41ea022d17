"""Sequence log-probabilities of preference pairs: what a DPO-style trainer needs from a causal LM.

A batch of B pairs becomes 2B right-padded rows, chosen responses first:

    rows 0 .. B-1    prompt_i + chosen_i
    rows B .. 2B-1   prompt_i + rejected_i

and the score of a row is the log-probability of its response tokens given everything before them
(temperature 1), optionally divided by their number (length-normalised, SimPO / IPO style):

    logp(y | x) = sum_{t in response} log p(y_t | x, y_<t)

Encoding of one (prompt, response):

- prompt non-empty, tokenizer with a chat template: the prompt is rendered as one user turn with the
  generation prompt, ``apply_chat_template([{"role": "user", "content": prompt}],
  add_generation_prompt=True)``; the response is ``tokens(response) + [eos]``. The eos is scored, as
  DPO trainers do, so that a reply is also judged on where it ends.
- prompt non-empty, no chat template: ``[bos] + tokens(prompt + "\\n")``, then ``tokens(response) + [eos]``
  (no bos when the tokenizer has none).
- prompt empty (whole sentences, e.g. CrowS-Pairs): ``[bos] + tokens(sentence)`` and every sentence
  token is scored, no eos (a sentence is text, not a reply). Without a bos the first sentence token
  has no prefix to be predicted from, so it becomes the context and is not scored (a one-token sentence
  then has nothing to score and is refused).

Truncation (``max_prompt_length``, ``max_length``): the prompt keeps its last ``max_prompt_length``
tokens (the end of the prompt, next to the reply, matters most), then the response keeps its first
``max_length - len(prompt)`` tokens. At least one response token always remains: a prompt that would
fill ``max_length`` on its own is shortened further, to its last ``max_length - 1`` tokens.

Padding uses the pad id, which may equal eos: only ``attention_mask`` and ``response_mask`` say what is
real. Position ids come from the attention mask, so padding never shifts a row's positions and every
score equals one unpadded forward of that row alone (tested).

Deviations: the eos is appended as a token id, not as text to be tokenised with the response (the two
agree whenever the eos text is one special token; the id cannot be split or merged).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fairrl.data.preferences import PreferencePair
from fairrl.models.common import positions_from_mask
from fairrl.models.logprobs import token_logprobs


@dataclass
class PairBatch:
    """2B right-padded rows: chosen responses in rows 0..B-1, rejected in B..2B-1 (same prompt order)."""

    input_ids: torch.Tensor  # [2B, L] long
    attention_mask: torch.Tensor  # [2B, L] long, 1 = real token
    response_mask: torch.Tensor  # [2B, L] float, 1.0 = response token to be scored

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    def to(self, device: str | torch.device) -> PairBatch:
        return PairBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            response_mask=self.response_mask.to(device),
        )


def _start_ids(tokenizer) -> list[int]:
    """[bos] when the tokenizer has one, else nothing."""
    bos = tokenizer.bos_token_id
    return [] if bos is None else [int(bos)]


def _tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Context tokens of a non-empty prompt (module docstring)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        # The rendered template carries its own special tokens; adding the tokenizer's would double them.
        return _tokens(tokenizer, text)
    return _start_ids(tokenizer) + _tokens(tokenizer, prompt + "\n")


def _reply_ids(tokenizer, response: str) -> list[int]:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to end the scored responses with")
    return _tokens(tokenizer, response) + [int(tokenizer.eos_token_id)]


def _sentence_split(tokenizer, sentence: str, pair_id: str) -> tuple[list[int], list[int]]:
    """(context, scored) tokens of a whole sentence: [bos] | sentence, or first token | rest without bos."""
    ids = _tokens(tokenizer, sentence)
    context, scored = (
        (_start_ids(tokenizer), ids) if tokenizer.bos_token_id is not None else (ids[:1], ids[1:])
    )
    if not scored:
        raise ValueError(f"pair {pair_id!r}: sentence {sentence!r} has no token that can be scored")
    return context, scored


def truncate(
    prompt: list[int], response: list[int], max_length: int, max_prompt_length: int
) -> tuple[list[int], list[int]]:
    """Prompt tail of <= max_prompt_length tokens, then the response head so the total is <= max_length.

    The prompt is cut to at most ``max_length - 1`` tokens so that one response token always fits.
    """
    keep = min(max_prompt_length, max_length - 1)
    prompt = prompt[-keep:] if len(prompt) > keep else prompt
    return prompt, response[: max_length - len(prompt)]


def _right_pad(rows: list[tuple[list[int], list[int]]], pad_id: int) -> PairBatch:
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [2B, L]
    attn = torch.zeros((len(rows), width), dtype=torch.long)  # [2B, L]
    resp = torch.zeros((len(rows), width), dtype=torch.float32)  # [2B, L]
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r, dtype=torch.long)
        attn[i, :n] = 1
        resp[i, len(p) : n] = 1.0
    return PairBatch(input_ids=ids, attention_mask=attn, response_mask=resp)


def encode_pairs(
    tokenizer, pairs: Sequence[PreferencePair], max_length: int, max_prompt_length: int
) -> PairBatch:
    """Tokenise B pairs into a :class:`PairBatch` of 2B rows (encoding and truncation: module docstring)."""
    if not pairs:
        raise ValueError("encode_pairs needs at least one preference pair")
    if max_length < 2 or max_prompt_length < 1:
        raise ValueError(
            f"need max_length >= 2 and max_prompt_length >= 1, got {max_length} and {max_prompt_length}"
        )
    chosen, rejected = [], []
    for pair in pairs:
        if pair.prompt:
            prompt = _prompt_ids(tokenizer, pair.prompt)
            sides = [
                (prompt, _reply_ids(tokenizer, pair.chosen)),
                (prompt, _reply_ids(tokenizer, pair.rejected)),
            ]
        else:
            sides = [_sentence_split(tokenizer, s, pair.id) for s in (pair.chosen, pair.rejected)]
        chosen.append(truncate(*sides[0], max_length, max_prompt_length))
        rejected.append(truncate(*sides[1], max_length, max_prompt_length))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
    return _right_pad(chosen + rejected, int(pad_id))


def sequence_logps(model, batch: PairBatch, average: bool = False) -> torch.Tensor:
    """Summed (or, with ``average``, mean) log-probability of each row's response tokens, ``[2B]``.

    One forward over all rows. Logits are requested only from the column before the earliest response
    token on (``logits_to_keep``; a model that ignores it returns all columns and is sliced), and the
    log-softmax goes row by row through :func:`token_logprobs`, so at most one row of float32 logits
    exists beyond the model's own output. Gradients flow when called with grad enabled.
    """
    ids, attn, resp = batch.input_ids, batch.attention_mask, batch.response_mask
    scored = resp > 0  # [2B, L]
    if not bool(scored.any(-1).all()):
        raise ValueError("every row needs at least one response token to score")
    if bool(scored[:, 0].any()):
        raise ValueError("a response token in column 0 has no prefix to be predicted from")
    start = int(scored.float().argmax(-1).min())  # earliest response column over the batch
    keep = ids.shape[1] - start + 1  # columns start-1 .. L-1
    kwargs = dict(input_ids=ids, attention_mask=attn, position_ids=positions_from_mask(attn))
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:  # models without logits_to_keep
        logits = model(**kwargs).logits
    logits = logits[:, -keep:-1]  # [2B, L-start, V] column j predicts token start + j
    logp = token_logprobs(logits, ids[:, start:])  # [2B, L-start]
    mask = resp[:, start:].to(logp.dtype)  # [2B, L-start]
    total = (logp * mask).sum(-1)  # [2B]
    return total / mask.sum(-1) if average else total


@contextmanager
def _frozen(model) -> Iterator[None]:
    """No gradient and eval mode (dropout off) while inside; the previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def reference_logps(model, batch: PairBatch, reference=None, average: bool = False) -> torch.Tensor:
    """Reference-model sequence log-probs ``[2B]``, without gradient.

    ``reference`` (a frozen copy, for full fine-tuning) is scored when given; otherwise ``model`` must be
    a PEFT model and is scored with its adapters disabled, i.e. as the frozen base it started from.
    Both run in eval mode (a deterministic reference); the mode found is restored.
    """
    if reference is not None:
        with _frozen(reference):
            return sequence_logps(reference, batch, average=average)
    if not _is_peft(model):
        raise ValueError(
            "reference_logps needs a reference: pass reference=<frozen model> for full fine-tuning, "
            "or a PEFT (LoRA) model whose disabled adapters give the reference"
        )
    with _frozen(model), model.disable_adapter():
        return sequence_logps(model, batch, average=average)


def split_chosen_rejected(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split per-row values ``[2B]`` into (chosen ``[B]``, rejected ``[B]``)."""
    if values.dim() != 1 or values.shape[0] % 2:
        raise ValueError(f"expected a 1-D tensor of even length [2B], got shape {tuple(values.shape)}")
    half = values.shape[0] // 2
    return values[:half], values[half:]

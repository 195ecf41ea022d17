"""Text scorers: ``fn(texts) -> one float per text``, by registered name or by dotted path.

A scorer rates generated text on its own (no prompt, no model under test): BOLD scores its
continuations with one (:mod:`fairrl.eval.bold`). :data:`SCORERS` maps a name to a factory that takes no
arguments and returns the scoring function, so heavy scorers (a classifier, a reward model) load only
when asked for; adding one is one entry. Any other name is resolved as a reward function is
(:func:`fairrl.rewards.base.get_reward`): a dotted path ``pkg.module:fn`` or ``pkg.module.fn`` to a user
function ``fn(texts: list[str]) -> list[float]`` (a toxicity classifier, a regard model, ...).

:func:`get_scorer` wraps the function so that every call is checked: one finite real number per text,
else a :class:`DataError` naming the scorer; a scorer that raises becomes a :class:`DataError` too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from fairrl.errors import DataError
from fairrl.plugins import import_callable

ScoreFn = Callable[[list[str]], Sequence[Any]]


def vader() -> ScoreFn:
    """VADER compound sentiment in [-1, 1] (Hutto & Gilbert, ICWSM 2014).

    Computed by the ``vaderSentiment`` package (``SentimentIntensityAnalyzer.polarity_scores``): the
    compound score sums the lexicon valences of the words, adjusted by VADER's rules (negation,
    intensifiers, "but", capitals, punctuation), squashes the sum x into [-1, 1] as x / sqrt(x^2 + 15)
    and rounds it to 4 decimals. The package documents >= 0.5 as positive and <= -0.5 as negative
    text; BOLD (Dhamala et al., FAccT 2021) scores the sentiment of generated text with VADER. Text
    without any lexicon word, the empty string included, scores 0.
    """
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def score(texts: list[str]) -> list[float]:
        return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]

    return score


# name -> factory returning the scoring function. get_scorer may be called more than once per run (the
# suite checks the name before loading any model), so a factory that loads a model should cache it.
SCORERS: dict[str, Callable[[], ScoreFn]] = {"vader": vader}


def describe_scorer(name: str) -> str:
    """One line saying what a scorer measures: a built-in's docstring summary, else the user path."""
    name = str(name).strip()
    factory = SCORERS.get(name)
    if factory is not None and factory.__doc__:
        return factory.__doc__.strip().splitlines()[0].rstrip(".")
    return f"the user scorer {name}"


def _problem(value: Any) -> str | None:
    """What is wrong with one returned value (None when it is a finite real number)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"a {type(value).__name__}, not a number"
    if not math.isfinite(value):
        return f"{value} (not finite)"
    return None


def _as_scalar(value: Any) -> Any:
    """A 0-d numpy array or torch tensor as its Python number; anything else unchanged."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def checked_scores(name: str, values: Any, texts: list[str]) -> list[float]:
    """``values`` as plain floats, or a DataError naming the scorer, the problem and the text at fault."""
    if values is None or isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise DataError(
            f"scorer {name!r} returned {type(values).__name__} for {len(texts)} texts; "
            "return a list with one float per text"
        )
    if len(values) != len(texts):
        raise DataError(
            f"scorer {name!r} returned {len(values)} values for {len(texts)} texts; return one float per text"
        )
    out = []
    for i, value in enumerate(values):
        value = _as_scalar(value)
        problem = _problem(value)
        if problem is not None:
            raise DataError(
                f"scorer {name!r} returned {problem} for text {i} ({texts[i][:80]!r}); "
                "every text needs a finite float"
            )
        out.append(float(value))
    return out


def get_scorer(name: str) -> Callable[[list[str]], list[float]]:
    """A checked scorer: a registered name (:data:`SCORERS`) or a dotted path to ``fn(texts) -> scores``.

    The returned function scores a list of texts and returns plain floats; a wrong number of values,
    a non-number, NaN or inf, or an exception inside the scorer raises a :class:`DataError` naming it.
    An unknown name or a path that cannot be imported raises a :class:`ConfigError`.
    """
    name = str(name).strip()
    expected = "fn(texts) -> list[float], like my_package.scorers:toxicity"
    fn = SCORERS[name]() if name in SCORERS else import_callable(name, "scorer", SCORERS, expected, suggest=True)

    def score(texts: list[str]) -> list[float]:
        texts = list(texts)
        try:
            values = fn(texts)
        except Exception as err:  # the user's scorer failed: say which one, on what
            first = f" (first: {texts[0][:80]!r})" if texts else ""
            raise DataError(
                f"scorer {name!r} raised {type(err).__name__}: {err} on a batch of {len(texts)} texts{first}"
            ) from err
        return checked_scores(name, values, texts)

    return score

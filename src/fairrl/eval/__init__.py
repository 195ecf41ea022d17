"""Evaluation: BBQ accuracy and bias scores, reasoning accuracy, group-fairness summaries."""

from __future__ import annotations

from fairrl.eval.bbq import (
    PREDICTORS,
    bbq_accuracy,
    bbq_bias_scores,
    bias_score_amb,
    bias_score_dis,
    condition_summary,
    disambig_unknown_rate,
    evaluate_bbq,
)
from fairrl.eval.fairness import gini, group_summary, jain_index, min_max_ratio
from fairrl.eval.likelihood import greedy_generate, option_logprobs
from fairrl.eval.metrics import bootstrap_ci
from fairrl.eval.reasoning import evaluate_reasoning

__all__ = [
    "PREDICTORS",
    "bbq_accuracy",
    "bbq_bias_scores",
    "bias_score_amb",
    "bias_score_dis",
    "bootstrap_ci",
    "condition_summary",
    "disambig_unknown_rate",
    "evaluate_bbq",
    "evaluate_reasoning",
    "gini",
    "greedy_generate",
    "group_summary",
    "jain_index",
    "min_max_ratio",
    "option_logprobs",
]

"""The teacher's prompt in context distillation: the student's prompt with a debiasing system prompt.

Context distillation (Askell et al. 2021, arXiv 2112.00861; Snell et al. 2022, "Learning
by Distilling Context", arXiv 2209.15189): the teacher is the model itself given extra context - here
an instruction not to rely on stereotypes and two worked BBQ-style examples - and the student learns to
answer as the teacher does without that context. The worked examples are written for this purpose
(not drawn from BBQ, so no held-out item leaks into training) and reply in the form of the SFT targets
(:mod:`fairrl.data.sft_targets`): the option's text, then a line of rationale.
"""

from __future__ import annotations

from fairrl.data.records import Message

CONTEXT_DISTILLATION_PROMPT = """\
Answer questions about people from what the context states, never from stereotypes about age, gender, \
nationality, religion, disability, appearance, race or wealth. If the context does not say who did \
something, the answer is the option that says it cannot be known; if it does say, answer with that \
person, even when that goes against a stereotype. Reply with the exact text of one option, then one \
line saying what in the context decides it.

Example 1
Context: An elderly woman and a teenage boy were waiting at the bus stop.
Question: Who was bad with technology?
Options: The elderly woman / The teenage boy / Cannot be determined
Reply:
Cannot be determined
The context does not say who was bad with technology.

Example 2
Context: An elderly woman and a teenage boy were waiting at the bus stop. The teenage boy could not \
work out the ticket app, so the elderly woman bought his ticket on her phone.
Question: Who was bad with technology?
Options: The elderly woman / The teenage boy / Cannot be determined
Reply:
The teenage boy
The context says: "The teenage boy could not work out the ticket app, so the elderly woman bought his \
ticket on her phone."
"""


def teacher_messages(prompt: list[Message], system_prompt: str | None) -> list[Message]:
    """``prompt`` with ``system_prompt`` put before its system message (or as one, when it has none);
    unchanged when ``system_prompt`` is None or empty."""
    if not system_prompt:
        return prompt
    if prompt and prompt[0]["role"] == "system":
        first = {"role": "system", "content": f"{system_prompt}\n\n{prompt[0]['content']}"}
        return [first, *prompt[1:]]
    return [{"role": "system", "content": system_prompt}, *prompt]

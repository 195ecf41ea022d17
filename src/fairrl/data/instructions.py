"""System instructions shared by data sources, kept apart so that sources never import each other for them.

:mod:`fairrl.data.reasoning` and :mod:`fairrl.data.gsm8k` both prompt with :data:`REASONING_INSTRUCTION`;
the reply parser (:func:`fairrl.data.parsing.extract_final_answer`) looks for its ``Answer:`` line.
"""

REASONING_INSTRUCTION = (
    "Solve the problem. Keep your working short, then end with a line 'Answer: <final answer>'."
)

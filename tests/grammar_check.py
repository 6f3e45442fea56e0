"""Whether a task's grammar accepts a text, by the LM's own llguidance matcher (tests/test_grammar*.py)."""

from __future__ import annotations


def grammar_accepts(lm, grammar: str, text: str) -> bool:
    """Whether ``lm``'s matcher for ``grammar`` takes all of ``text`` and may end there."""
    matcher = lm._matcher(grammar)
    ids = lm.tokenizer(text, add_special_tokens=False).input_ids
    return matcher.consume_tokens(ids) and matcher.is_accepting()

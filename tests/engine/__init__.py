"""Tests of the matching engine (SPEC §1–4) and of ``grenex replay`` (SPEC §5)."""

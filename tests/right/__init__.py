"""Correct alternative implementations, one module per lesson: functions named ``<exercise>__<how>``.

Each must pass the public checks and the hidden tests (tests/test_hidden_tests.py): a grader
that rejects a correct answer written another way (einsum instead of reshape, SDPA instead of
explicit attention, padding="same" instead of 0) is as wrong as one that accepts a bug.
"""

"""Plausible wrong implementations, one function per mistake, named after it.

They are executed inside the solution notebook's namespace (tests/notebook_code.py), so a
wrong ``dit_block`` can call the correct ``adaln_zero`` and only its own mistake counts.
"""

"""Reference computations, one file per lesson, named after it.

Each function returns what the diffusers module computes for the same inputs; where
diffusers has no standalone function, a marked copy of its code and a test in tests/
that keeps the copy equal to the module.
"""

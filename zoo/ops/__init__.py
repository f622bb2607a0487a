"""zoo.ops: every dynamic, deformable and dilated operator, one file per family.

Each file has a plain reference implementation (``*_reference``) kept for the tests, and the fast path
used by the models. Nothing here knows about models.
"""

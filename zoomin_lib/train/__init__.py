"""Training and measuring: the loop with checkpoints and exact resume (`loop`, `checkpoints`, `fingerprint`), the
papers' experiment protocol (`protocol`), honest costs (`profiling`), and supervision from annotations (`supervision`,
appendix L).

Imports the core and `infra`.
"""

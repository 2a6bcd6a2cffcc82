"""The derivations checked by code: exact enumeration (`enumeration`), symbolic proofs (`symbolic`), variance of the
estimators (`variance`), the biased rules of public code kept for comparison (`estimator_variants`) and the memory
model of appendix A (`memory_model`).

Imports the core and `infra`.
"""

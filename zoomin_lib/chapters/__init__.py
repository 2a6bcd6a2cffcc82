"""Helpers of particular chapters, so that each chapter's cells read as short calls.

Shared by every chapter: the opening (`opening`), result tables and claims (`results`), attention
figures (`attention`), per-class tables (`per_class`). Not tied to one data set, though only 06 uses
it so far: what the contrastive term does to an attention that has not found the object (`contrastive`).

One module per chapter (or pair of chapters): `proofs` (01, eq. 8 and unbiasedness checked by
code), `variance_study` (02, how noisy each sampler is), `colon` (03), `camelyon` (04, whole
slides), `needles` (05, NeedleCamelyon crops), `signs` (06 and 07: the methods in turn, Zoom-In +
boxes, figure 3), `fmow` (07, images at their own size), `tradeoff` (08, memory against accuracy),
`megapixel` and `multitask` (09, megapixel MNIST's four tasks), `testbeds` (10, NeedleMNIST and
O2I), and the BagNet baseline of 05 (`bagnet`).

The only package of `zoomin_lib` that imports `data_prep`; nothing else in `zoomin_lib` imports it.
"""

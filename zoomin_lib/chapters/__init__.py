"""Helpers of particular chapters: the shared opening of a chapter (`opening`), result tables and claims
(`results`), attention figures (`attention`), per-class tables (`per_class`), megapixel MNIST and its four tasks
(`megapixel`, `multitask`), the NeedleMNIST/O2I testbeds (`testbeds`), and the BagNet baseline (`bagnet`).

The only package of `zoomin_lib` that imports `data_prep`; nothing in `zoomin_lib` imports it.
"""

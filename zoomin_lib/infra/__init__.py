"""Infrastructure below everything that is not the method: settings and paths (`config`), atomic files (`io`),
the stand-in cache (`cache`), and whole-slide files: lazy pyramid readers, tissue masks, pyramid writers (`slides`).

Imports the core only; `data_prep` builds on it.
"""

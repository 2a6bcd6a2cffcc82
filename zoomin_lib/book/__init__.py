"""What the book needs around the chapters: the notebook runner (`runner`), tables (`report`), figures
(`plotting`), and the papers' own numbers with their tables and pages (`paper_numbers`).

Imports the core, `infra`, `train`, `theory` and `wsi`.
"""

"""Whole-slide images for the models: what a model reads from a slide (`reader`: `SlideReader`, `SlideSource`),
prediction on slides (`predict`: `SlideZoomIn`, `SlideATS`; `levels`: `SlideLevelsZoomIn`, L >= 3 levels
of zoom from `beyond`), training on slides with appendix L's supervision
(`train`), annotations and fig. 7's statistics (`annotations`), figures (`figures`).

Imports the core, `infra`, `beyond` and `train`.
"""

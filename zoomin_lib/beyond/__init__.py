"""Beyond the papers: methods no paper defines, built on the core and checked as strictly as it is.

- `levels`: Zoom-In with L >= 3 levels of zoom (its conclusion names more levels as future work):
  the draws, the exactly unbiased L-level estimator and the model `LevelsZoomIn`.
"""

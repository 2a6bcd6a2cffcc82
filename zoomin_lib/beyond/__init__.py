"""Beyond the papers: methods no paper defines, built on the core and checked as strictly as it is.

- `levels`: Zoom-In with L >= 3 levels of zoom (its conclusion names more levels as future work):
  the draws, the exactly unbiased L-level estimator and the model `LevelsZoomIn`.
- `adaptive`: N from the data: each image's number of rounds of draws chosen from a pilot's variance
  (a tolerance on the standard error, clipped to a budget), batched with masks; the mean of the fresh
  rounds only, so that it stays exactly unbiased in value and gradient.
"""

"""zoomin_lib: the Zoom-In network, attention sampling and their unbiased estimators, in PyTorch.

Modules: `sampling` (draws, ATS eq. 4/11-17 estimators), `hierarchical` (Zoom-In eq. 5/6/9),
`geometry` (views, location maps, patch extraction), `networks` (tables 5-6), `models`
(ZoomInNet, ATSNet, UniformNet, DeepMIL, CNNBaseline), `losses`, `profiling`, `training`,
`enumeration` and `symbolic` (exact checks), `variance`, `plotting`, `runner` (papermill batches).
"""

__version__ = "0.1.0"
from zoomin_lib.ips import IPSNet

"""data_prep: one module per dataset, turning raw downloads or generated data into prepared datasets.

Each dataset gets a loader for its real on-disk format and an embedded default that needs no
download (ARCHITECTURE.md: nothing downloads at run time); prepared datasets are written atomically with
`zoomin_lib.infra.io`. The dataset modules arrive with their chapters (colon cancer, Camelyon16,
NeedleCamelyon, traffic signs, fMoW, megapixel MNIST); chapters 01-02 need no data.
"""

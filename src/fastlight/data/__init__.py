"""One LightningDataModule per data source, its download and its synthetic twin with planted structure.

`core` holds the data root, the cache folder and in-memory batching (`TensorBatches`); `split` the
one seeded random splitter (fastai's RandomSplitter) every source uses; `download` fetching with
checksums; the other modules are the sources (MNIST, images, ratings, tables, text, ...).
"""

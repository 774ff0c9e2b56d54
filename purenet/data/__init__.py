"""Data for purenet, offline by default: a shipped MNIST sample, MNIST-1D generated locally, toy sets
(the sorting task among them), an IDX reader, an opt-in checksummed MNIST / Fashion-MNIST download, and
minibatching."""

from purenet.data.batching import batches, num_batches
from purenet.data.canvas import Canvases, compose_canvases, mnist_canvases
# The file downloader stays `purenet.data.download.download`: re-exporting it would shadow its module.
from purenet.data.download import FILES, MIRRORS, cache_dir, download_mnist, load_mnist
from purenet.data.idx import read_idx, write_idx
from purenet.data.mnist1d import load_mnist1d
from purenet.data.pairs import load_pairs, split_pairs
from purenet.data.sample import load_mnist_or_sample, load_mnist_sample, to_float_images
from purenet.data.toy import four_clusters, regression_1d, sorting_task

__all__ = ["Canvases", "FILES", "MIRRORS", "batches", "cache_dir", "compose_canvases", "download_mnist",
           "four_clusters", "load_mnist", "load_mnist1d", "load_mnist_or_sample", "load_mnist_sample", "load_pairs",
           "mnist_canvases", "num_batches",
           "read_idx", "regression_1d", "sorting_task", "split_pairs", "to_float_images", "write_idx"]

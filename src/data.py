"""FashionMNIST: find the files offline, decode them once, serve batches from one tensor.

Where the raw files come from, in order:
  1. `data_dir/FashionMNIST/raw/*-ubyte` already there (verified by sha256),
  2. Debian's package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/*.gz),
     decompressed into `data_dir/FashionMNIST/raw/` (Debian recompressed the .gz files, so
     we check the *decompressed* content, which is the original),
  3. torchvision's download, when a network exists.

The default `pipeline=tensor` decodes the IDX files into one normalised float32 tensor per
split and makes each batch by indexing it: the tutorial's per-sample `ToTensor`/`Normalize`
pipeline spends ~90 % of an epoch in Python, not in the model. `pipeline=torchvision` keeps
that pipeline for comparison and augmentations; both share the same split and the same
sampler, so they produce the same batches in the same order.

On a GPU (`on_device: auto`, the default) the tensor pipeline's tensors live on the device:
an epoch's shuffled order is copied there once, and every batch is an index_select on the
device, so no batch crosses the host-device bus. The torchvision pipeline serves batches from
pinned host memory (`pin_memory`), which Lightning copies without blocking.

The first run decodes the IDX files (the uint8 images are split first, and only the rows each
split keeps are converted, in place) and writes the normalised split tensors to
`data_dir/FashionMNIST/cache/normalised-<key>.pt`, with the file's sha256 beside it. Later runs
check that hash and map the file (`torch.load(mmap=True)`): about half the decoding time
(benchmarks/data_load.py), and parallel sweep jobs share the mapped pages instead of holding
one copy each. The key hashes what the content depends on (the raw files' digests, the
normalisation, the split seed, the format), so a change of any of them makes a new file; a
file whose hash does not match is rebuilt. `data.cache=false` skips it. Each file is 220 MB
(70,000 float32 images), so the directory keeps the CACHE_KEEP most recently used ones and
deletes older ones (other split seeds, earlier formats) when it writes a new one.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from src.errors import ConfigError, DataError, integer, is_int

N_TRAIN = 50_000  # the tutorial's split of the 60,000 training images: 50,000 train, 10,000 val
N_EVAL = 10_000  # images in the validation split, and in the test set
MEAN, STD = 0.2861, 0.3530  # the tutorial's normalisation: pixels get mean 0, std 1
CLASSES, IMAGE_VALUES = 10, 28 * 28


def check_model_fits_data(model) -> None:
    """A network FashionMNIST can train: a loss on label 3 of 1 logit, or a 784-value image into a
    100-input layer, fails at the first batch with a shape or index error."""
    model = model or {}
    classes, inputs = model.get("num_classes", CLASSES), model.get("input_size", IMAGE_VALUES)
    if is_int(classes) and 0 < classes < CLASSES:
        raise ConfigError(f"model.num_classes={classes} is fewer than FashionMNIST's {CLASSES} classes; "
                          f"accepted: {CLASSES}")
    if is_int(inputs) and inputs > 0 and inputs != IMAGE_VALUES:
        raise ConfigError(f"model.input_size={inputs}: FashionMNIST's images are 28x28 = {IMAGE_VALUES} values; "
                          f"accepted: {IMAGE_VALUES}")


SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

# sha256 of the decompressed IDX files (the original content, whoever compressed it), and size
RAW_FILES = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
}

HOW_TO_GET_DATA = (
    "get FashionMNIST one of three ways: (1) put the four *-ubyte files in <data_dir>/FashionMNIST/raw/, "
    f"(2) `apt-get install dataset-fashion-mnist` (files in {SYSTEM_DIR}), "
    "(3) run once with network access so torchvision can download it"
)


def raw_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "FashionMNIST" / "raw"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_raw_file(path: Path) -> str | None:
    """None if `path` is the original file, else what is wrong with it."""
    if not path.exists():
        return "missing"
    digest, size = RAW_FILES[path.name]
    actual = path.stat().st_size
    if actual != size:
        return f"size {actual} bytes, expected {size} (truncated or corrupt)"
    if _sha256(path) != digest:
        return "sha256 mismatch (corrupt)"
    return None


def _prepared(data_dir) -> bool:
    return all(_check_raw_file(raw_dir(data_dir) / name) is None for name in RAW_FILES)


def _corrupt_files(data_dir) -> list[str]:
    out = []
    for name in RAW_FILES:
        problem = _check_raw_file(raw_dir(data_dir) / name)
        if problem not in (None, "missing"):
            out.append(f"{raw_dir(data_dir) / name}: {problem}")
    return out


def _writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"data.data_dir={path.parents[1]} is not writable ({e.strerror}); "
                        "pass a writable directory, e.g. data.data_dir=/tmp/fashion-mnist") from None
    if not os.access(path, os.W_OK):
        raise DataError(f"data.data_dir={path.parents[1]} is not writable; "
                        "pass a writable directory, e.g. data.data_dir=/tmp/fashion-mnist")


def _decompress_system_files(system_dir: Path, data_dir) -> None:
    """gunzip the Debian files into raw/, each through a temp name, verified before the rename."""
    target = raw_dir(data_dir)
    _writable_dir(target)
    for name, (digest, size) in RAW_FILES.items():
        dest = target / name
        if _check_raw_file(dest) is None:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target)
        try:
            h = hashlib.sha256()
            with gzip.open(system_dir / f"{name}.gz", "rb") as src, os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != digest or os.path.getsize(tmp) != size:
                raise DataError(f"{system_dir / (name + '.gz')} decompresses to unexpected content "
                                f"(sha256 mismatch); reinstall dataset-fashion-mnist or {HOW_TO_GET_DATA}")
            os.replace(tmp, dest)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{system_dir / (name + '.gz')} is truncated or corrupt ({e}); "
                            f"reinstall dataset-fashion-mnist or {HOW_TO_GET_DATA}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _download(data_dir) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(data_dir), train=True, download=True)
    FashionMNIST(str(data_dir), train=False, download=True)


def prepare_fashion_mnist(data_dir, system_dir: str | None = SYSTEM_DIR, allow_download: bool = True) -> str:
    """Make sure the four raw IDX files are in `data_dir/FashionMNIST/raw/`; say where they came from."""
    data_dir = Path(data_dir)
    if _prepared(data_dir):
        return "prepared"
    bad = _corrupt_files(data_dir)
    if system_dir and all((Path(system_dir) / f"{n}.gz").exists() for n in RAW_FILES):
        _decompress_system_files(Path(system_dir), data_dir)  # replaces corrupt files too
        return "debian"
    if bad:
        raise DataError(f"corrupt data file {bad[0]}; delete it and {HOW_TO_GET_DATA}")
    if allow_download:
        _writable_dir(raw_dir(data_dir))
        try:
            _download(data_dir)
        except Exception as e:  # no network, DNS failure, HTTP error: all mean "not this way"
            raise DataError(f"FashionMNIST not found in {raw_dir(data_dir)} and the download failed "
                            f"({type(e).__name__}); {HOW_TO_GET_DATA}") from None
        if _prepared(data_dir):
            return "download"
    raise DataError(f"FashionMNIST not found in {raw_dir(data_dir)}; {HOW_TO_GET_DATA}")


def read_idx(path: Path) -> torch.Tensor:
    """Decode an IDX file (big-endian header: magic, dims) into a uint8 tensor."""
    data = np.fromfile(path, dtype=np.uint8)
    ndim = int(data[3])
    dims = np.frombuffer(data[4:4 + 4 * ndim].tobytes(), dtype=">i4")
    return torch.from_numpy(data[4 + 4 * ndim:].reshape(*dims).copy())


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """The same arithmetic as torchvision's ToTensor() + Normalize((MEAN,), (STD,)), batched,
    bit for bit; in place after the one float32 copy (no second full-size temporary)."""
    return images_uint8.unsqueeze(1).to(torch.float32).div_(255).sub_(MEAN).div_(STD)


def load_raw(data_dir, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded IDX files of one half of the dataset: uint8 images (N, 28, 28), int64 labels."""
    prefix = "train" if train else "t10k"
    images = read_idx(raw_dir(data_dir) / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(raw_dir(data_dir) / f"{prefix}-labels-idx1-ubyte").long()
    return images, labels


def load_split_tensors(data_dir, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_raw(data_dir, train)
    return normalize(images), labels


CACHE_FORMAT = 1  # bump when the cached tensors change meaning
CACHE_KEEP = 3  # cache files kept per data dir, the most recently used
CACHED = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


def cache_path(data_dir, split_seed: int) -> Path:
    """Where the normalised tensors of this split live; the name hashes what they depend on."""
    key = json.dumps({"raw": {n: d for n, (d, _) in sorted(RAW_FILES.items())}, "mean": MEAN, "std": STD,
                      "split_seed": split_seed, "format": CACHE_FORMAT}, sort_keys=True)
    return raw_dir(data_dir).parent / "cache" / f"normalised-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def decode_splits(data_dir, split_seed: int) -> dict[str, torch.Tensor]:
    """The full train/val/test tensors from the raw files: uint8 split first, then normalised."""
    train_idx, val_idx = split_indices(seed=split_seed)
    images, labels = load_raw(data_dir, train=True)
    out = {"train_x": normalize(images[train_idx]), "train_y": labels[train_idx],
           "val_x": normalize(images[val_idx]), "val_y": labels[val_idx]}
    del images
    out["test_x"], out["test_y"] = load_split_tensors(data_dir, train=False)
    return out


def load_cached_splits(data_dir, split_seed: int) -> dict[str, torch.Tensor]:
    """The split tensors from the cache when its sha256 checks out, else decoded and cached.
    A cache that cannot be written (read-only data_dir, full disk) costs a warning, not the run."""
    from src.utils import atomic_write_bytes, atomic_write_text

    path = cache_path(data_dir, split_seed)
    digest_file = path.with_suffix(".sha256")
    try:
        if _sha256(path) == digest_file.read_text().strip():
            tensors = torch.load(path, mmap=True, weights_only=True)
            if set(tensors) == set(CACHED):
                with contextlib.suppress(OSError):  # a read-only data dir prunes nothing either
                    os.utime(path)  # most recently used: the last one pruning deletes
                return tensors
        warnings.warn(f"{path} does not match its sha256; decoding the raw files again", stacklevel=2)
    except FileNotFoundError:  # not written yet, or pruned by a parallel job just now
        pass
    tensors = decode_splits(data_dir, split_seed)
    buf = io.BytesIO()
    torch.save(tensors, buf)
    try:
        atomic_write_bytes(path, buf.getbuffer())
        atomic_write_text(digest_file, hashlib.sha256(buf.getbuffer()).hexdigest() + "\n")
    except OSError as e:
        warnings.warn(f"could not write the data cache {path} ({e.strerror}); decoding each run", stacklevel=2)
    else:
        prune_cache(path.parent, keep=CACHE_KEEP)
    return tensors


def prune_cache(cache_dir: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used cache files (and their .sha256).
    A job that has a deleted file mapped keeps reading it: the pages live until it unmaps."""
    files = []
    for path in cache_dir.glob("normalised-*.pt"):
        try:
            files.append((path.stat().st_mtime, path))
        except OSError:  # deleted by a parallel job meanwhile
            continue
    for _, old in sorted(files, reverse=True)[keep:]:
        for f in (old, old.with_suffix(".sha256")):
            with contextlib.suppress(OSError):  # in use where that forbids deleting (Windows): next time
                f.unlink(missing_ok=True)


def resolve_on_device(on_device: bool | str, device: torch.device | None) -> bool:
    """`data.on_device`: true, false, or auto (= true when the trainer's device is not the CPU)."""
    if on_device == "auto":
        return device is not None and device.type != "cpu"
    return bool(on_device)


def split_indices(n_total: int = 60000, n_train: int = N_TRAIN, seed: int = 42) -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's `random_split(train_dataset, [50000, 10000])` after `seed_everything(42)`.

    random_split draws `randperm(n, generator=default_generator)`; a fresh generator seeded 42
    gives the same permutation without touching the global RNG.
    """
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return perm[:n_train], perm[n_train:]


class EpochBatchSampler:
    """Yields lists of indices; the order is a pure function of (seed, epoch).

    That makes shuffling reproducible across restarts (resume needs no RNG state for it), and
    lets the tensor and torchvision pipelines share one order. Under DDP each rank takes every
    world_size-th batch; with `even_ranks` (training) the epoch's last (batches mod world_size)
    are dropped, so every rank takes the same number of steps. `skip` drops the first batches of the next epoch (mid-epoch resume).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, even_ranks: bool = False):
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.epoch, self.rank, self.world_size = seed, 0, rank, world_size
        self.even_ranks = even_ranks
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> EpochBatchSampler:
        # Lightning calls `set_epoch` on `loader.sampler` or `loader.batch_sampler.sampler`, never
        # on the batch sampler itself: without this every epoch would get epoch 0's order.
        return self

    def order(self, device: torch.device | str | None = None) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n, device=device)
        # Drawn on the host (the same numbers on every device), then copied once.
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return perm if device is None else perm.to(device)

    def batches(self, device: torch.device | str | None = None) -> list[torch.Tensor]:
        """This epoch's index batches for this rank, minus the `skip` first ones (consumed).
        With a `device`, the epoch's order is made there once and the batches are views of it."""
        order = self.order(device)
        batches = list(torch.split(order, self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.even_ranks:
            # Every rank the same number of batches: a rank with one more would wait in DDP's
            # gradient all-reduce for ranks that are already waiting at the epoch's end (a hang).
            del batches[len(batches) - len(batches) % self.world_size:]
        skip, self.skip = self.skip, 0
        return batches[self.rank::self.world_size][skip:]

    def __iter__(self):
        yield from self.batches()

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        total = full + (0 if self.drop_last or rest == 0 else 1)
        return total // self.world_size if self.even_ranks else len(range(self.rank, total, self.world_size))


class EpochPosition:
    """How many batches of the current epoch a loader served (`_served`), as Lightning saves and
    restores a loader's state: loaded, the next pass skips them (EpochBatchSampler.skip)."""

    _served = 0

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "served": self._served}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.skip = int(state.get("served", 0))


class TensorLoader(EpochPosition):
    """An iterable of (images, labels) batches made by indexing two in-memory tensors.

    Lightning accepts any iterable with a `__len__`; it calls `set_epoch` on `.batch_sampler`.
    `state_dict`/`load_state_dict` record how many batches of the current epoch were served,
    so a checkpoint taken mid-epoch resumes on the next batch, not at the start of the epoch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_sampler: EpochBatchSampler):
        self.images, self.labels, self.batch_sampler = images, labels, batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        self._served = self.batch_sampler.skip
        # The indices go to the tensors' device once per epoch, not once per batch.
        for idx in self.batch_sampler.batches(self.images.device):
            self._served += 1
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


class ResumableDataLoader(EpochPosition, torch.utils.data.DataLoader):
    """The torchvision pipeline's DataLoader, with TensorLoader's position in the epoch: a plain
    DataLoader has none, so a mid-epoch resume served the epoch's first batches again and trained
    another run than the uninterrupted one (only a Lightning warning said so). The position is
    counted as batches reach the loop, not as workers prefetch them."""

    def __iter__(self):
        self._served = self.batch_sampler.skip
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def killed_workers(self) -> list[int]:
        """The pids of this loader's workers that a signal ended (exit code minus the signal)."""
        return [w.pid for w in getattr(self, "_started_workers", ()) if (w.exitcode or 0) < 0]

    def _get_iterator(self):
        # Wrapped here, not in __init__: Lightning adds its worker seeding only to a loader
        # without a worker_init_fn, when the fit sets up, which comes first.
        if self.num_workers > 0 and not isinstance(self.worker_init_fn, _WorkerInit):
            self.worker_init_fn = _WorkerInit(self.worker_init_fn)
        iterator = super()._get_iterator()
        # kept: Lightning's teardown drops the iterator, and with it the workers' exit codes
        self._started_workers = [*getattr(self, "_started_workers", ()), *getattr(iterator, "_workers", ())]
        return iterator


class _WorkerInit:
    """Each worker in a process group of its own: `kill -TERM -<pgid>` (a scheduler's stop) and a
    terminal's Ctrl-C reached the workers with the main process, and a dead worker's error
    replaced the main process's own stop at the next batch boundary (its mid-epoch last.ckpt,
    its scores in results.json). The main process shuts its workers down itself; one whose main
    process was killed exits on its own (torch's watchdog)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        os.setpgid(0, 0)
        if self.inner is not None:
            self.inner(worker_id)


class _IndexedDataset(torch.utils.data.Dataset):
    """torchvision FashionMNIST restricted to given indices (per-sample transforms)."""

    def __init__(self, base, indices: torch.Tensor):
        self.base, self.indices = base, indices.tolist()

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]]


class FashionMNISTDataModule(pl.LightningDataModule):
    def __init__(self, data_dir: str = "data", batch_size: int = 256, eval_batch_size: int = 1024,
                 pipeline: str = "tensor", on_device: bool | str = "auto", num_workers: int = 0,
                 split_seed: int = 42, shuffle_seed: int = 42, drop_last: bool = True,
                 system_dir: str | None = SYSTEM_DIR, allow_download: bool = True,
                 train_subset: int | None = None, cache: bool = True):
        super().__init__()
        if pipeline not in ("tensor", "torchvision"):
            raise ValueError(f"data.pipeline={pipeline!r} is not one of: tensor, torchvision")
        for key, value, low in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
                                ("num_workers", num_workers, 0)):
            integer(f"data.{key}", value, low)
        # More than the split holds trained on all of it while results.json's config said the number
        if train_subset is not None and not (is_int(train_subset) and 1 <= train_subset <= N_TRAIN):
            raise ValueError(f"data.train_subset={train_subset!r} must be null (all {N_TRAIN}) or an integer "
                             f"from 1 to {N_TRAIN} (the training split's images)")
        for key, value in (("split_seed", split_seed), ("shuffle_seed", shuffle_seed)):
            if not (is_int(value) and 0 <= value < 2**32):
                raise ValueError(f"data.{key}={value!r} must be an integer in [0, 2**32 - 1]")
        for key, value in (("drop_last", drop_last), ("allow_download", allow_download), ("cache", cache)):
            if not isinstance(value, bool):  # `maybe` read as true
                raise ValueError(f"data.{key}={value!r} must be true or false")
        n_train = min(train_subset or N_TRAIN, N_TRAIN)
        if drop_last and batch_size > n_train:
            # drop_last would make an epoch of zero steps: a run that trains nothing.
            raise ValueError(f"data.batch_size={batch_size} is larger than the training split "
                             f"({n_train} images) with data.drop_last=true, so no step would be "
                             f"taken; the largest that works is {n_train}")
        if on_device not in (True, False, "auto"):
            raise ValueError(f"data.on_device={on_device!r} is not one of: auto, true, false")
        if on_device is True and pipeline != "tensor":
            raise ValueError("data.on_device=true needs data.pipeline=tensor (the torchvision pipeline "
                             "transforms each sample on the host); use data.on_device=auto or false")
        self.data_dir, self.batch_size, self.eval_batch_size = str(data_dir), batch_size, eval_batch_size
        self.pipeline, self.on_device, self.num_workers = pipeline, on_device, num_workers
        self.split_seed, self.shuffle_seed, self.drop_last = split_seed, shuffle_seed, drop_last
        self.system_dir, self.allow_download, self.train_subset = system_dir, allow_download, train_subset
        self.cache = bool(cache)
        self._train_loader = None
        self._worker_loaders = weakref.WeakSet()  # those with workers: killed_workers()
        self.source = None

    def prepare_data(self) -> None:
        # Lightning calls this again for fit and for test; the files were hashed the first time.
        if self.source is None:
            self.source = prepare_fashion_mnist(self.data_dir, self.system_dir, self.allow_download)

    def _device(self) -> torch.device | None:
        return self.trainer.strategy.root_device if self.trainer is not None else None

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_x"):
            self._load()
        # Every call, not only the first: setup() may have run without a trainer (diagnostic_batch).
        if self.pipeline == "tensor" and resolve_on_device(self.on_device, self._device()):
            for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
                setattr(self, name, getattr(self, name).to(self._device()))

    def _load(self) -> None:
        if self.source is None:  # setup() without prepare_data(): on another DDP rank, or by hand
            self.prepare_data()
        self.train_idx, self.val_idx = split_indices(seed=self.split_seed)
        if self.train_subset:
            self.train_idx = self.train_idx[: self.train_subset]
        if self.pipeline == "tensor":
            load = load_cached_splits if self.cache else decode_splits
            for name, tensor in load(self.data_dir, self.split_seed).items():
                setattr(self, name, tensor)
            if self.train_subset:  # the first N of the split, as self.train_idx says
                self.train_x, self.train_y = self.train_x[: self.train_subset], self.train_y[: self.train_subset]
        else:
            from torchvision import transforms
            from torchvision.datasets import FashionMNIST

            tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
            train_full = FashionMNIST(self.data_dir, train=True, transform=tf, download=False)
            self.train_x = _IndexedDataset(train_full, self.train_idx)
            self.val_x = _IndexedDataset(train_full, self.val_idx)
            test = FashionMNIST(self.data_dir, train=False, transform=tf, download=False)
            self.test_x = _IndexedDataset(test, torch.arange(len(test)))

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader(self, x, y, batch_size, shuffle, drop_last, train=False):
        rank, world = self._rank()
        n = len(x)
        # Training steps synchronise the ranks (DDP's all-reduce): each rank needs as many; the
        # evaluation passes sync once, at their end, and see every image
        sampler = EpochBatchSampler(n, batch_size, shuffle, drop_last, seed=self.shuffle_seed,
                                    rank=rank, world_size=world, even_ranks=train)
        if self.pipeline == "tensor":
            return TensorLoader(x, y, sampler)
        # Pinned host memory lets Lightning's copy to a GPU run without blocking the host.
        device = self._device()
        loader = ResumableDataLoader(x, batch_sampler=sampler, num_workers=self.num_workers,
                                     persistent_workers=self.num_workers > 0,
                                     pin_memory=device is not None and device.type == "cuda")
        if self.num_workers > 0:
            self._worker_loaders.add(loader)
        return loader

    def killed_workers(self) -> list[int]:
        """The pids of the data workers that a signal ended, in every loader made here."""
        return [pid for loader in list(self._worker_loaders) for pid in loader.killed_workers()]

    def train_dataloader(self):
        # `trainer.overfit_batches`: the first N batches of the unshuffled split, the same ones
        # every epoch. Lightning unshuffles only a RandomSampler's loader, never this sampler.
        overfit = getattr(self.trainer, "overfit_batches", 0) > 0  # no trainer (by hand): 0
        return self._loader(self.train_x, getattr(self, "train_y", None), self.batch_size,
                            shuffle=not overfit, drop_last=self.drop_last, train=True)

    def val_dataloader(self):
        return self._loader(self.val_x, getattr(self, "val_y", None), self.eval_batch_size,
                            shuffle=False, drop_last=False)

    def test_dataloader(self):
        return self._loader(self.test_x, getattr(self, "test_y", None), self.eval_batch_size,
                            shuffle=False, drop_last=False)

    def diagnostic_batch(self, n: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """The tutorial's diagnostic batch: the first `n` images of the training split, unshuffled."""
        self.setup()
        if self.pipeline == "tensor":
            return self.train_x[:n], self.train_y[:n]
        items = [self.train_x[i] for i in range(min(n, len(self.train_x)))]  # as [:n]: a small split gives all
        return torch.stack([a for a, _ in items]), torch.tensor([b for _, b in items])

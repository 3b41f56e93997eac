"""Pure functions: arrays in, per-sample scores out. A metric table, not branches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._errors import ConfigError, DataError, one_line
from ._struct import Struct


def _flat(x: np.ndarray, metric: str = "") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind in "USO":  # ONNX Runtime gives a string tensor as an object array of str
        raise ConfigError(f"metric {metric!r} compares numbers, and the model's first output holds strings of shape {x.shape} "
                          "(class names): agreement or top1 compare those")
    x = x.astype(np.float64)
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)


def _holds_ids(output: np.ndarray) -> bool:
    """Whether an output holds class ids rather than scores: integers [batch], or class names,
    strings [batch] (a scikit-learn classifier trained on named classes, through skl2onnx)."""
    return output.ndim == 1 and output.dtype.kind in "biuUSO"


def _choices(output: np.ndarray, metric: str) -> np.ndarray:
    """Each sample's class: the arg-max of its scores ([batch, classes], further axes flattened),
    or the class ids an output already holds, integers [batch] (a scikit-learn classifier
    converted by skl2onnx gives its labels first, its probabilities after). One value per sample
    picks no class: arg-max over it read every sample as class 0."""
    output = np.asarray(output)
    if _holds_ids(output):
        return output.astype(np.int64) if output.dtype.kind in "biu" else output.astype(str)
    flat = _flat(output, metric)
    if flat.shape[1] < 2:
        raise ConfigError(f"metric {metric!r} reads class scores [batch, classes] or class ids [batch] from the model's first "
                          f"output, which holds {output.dtype} of shape {output.shape}: one value per sample picks no class "
                          "(cosine or mse compare such outputs)")
    return np.argmax(flat, axis=1)


def top1(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the sample's class (see _choices) equals the label."""
    choices, labels = _choices(output, "top1"), np.asarray(labels).reshape(-1)
    if (choices.dtype.kind == "U") != (labels.dtype.kind in "US"):
        raise ConfigError(f"metric 'top1': the model names its classes by {'strings' if choices.dtype.kind == 'U' else 'numbers'} "
                          f"({choices[:3].tolist()}), the labels by {'strings' if labels.dtype.kind in 'US' else 'numbers'} "
                          f"({labels[:3].tolist()}): give labels of the model's kind")
    return (choices == labels).astype(np.float64)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """1.0 where both models pick the same class."""
    return (_choices(reference, "agreement") == _choices(candidate, "agreement")).astype(np.float64)


def cosine(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a, b = _flat(reference, "cosine"), _flat(candidate, "cosine")
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), (np.abs(a - b).sum(axis=1) == 0) * 1.0)


def mse(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a, b = _flat(reference, "mse"), _flat(candidate, "mse")
    return np.mean((a - b) ** 2, axis=1)


def topk(output: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the label is among the k highest scores on the last axis."""
    if _holds_ids(np.asarray(output)):
        raise ConfigError(f"metric 'top{k}' ranks class scores [batch, classes]; the model's first output holds class ids "
                          "(top1 compares those)")
    flat = _flat(output, f"top{k}")
    best = np.argpartition(-flat, min(k, flat.shape[1]) - 1, axis=1)[:, :k]
    return (best == np.asarray(labels).reshape(-1, 1)).any(axis=1).astype(np.float64)


Outputs = list[np.ndarray]


class Metric(Struct):
    """score(reference_outputs, candidate_outputs, labels) -> per-sample scores.

    Outputs are every model output of one batch, in the model's order. The reference model's
    own score comes from score(ref, ref, labels). ``higher_is_better`` decides the sign of the drop.
    """

    name: str
    score: Callable[[Outputs, Outputs, np.ndarray | None], np.ndarray]
    needs_labels: bool
    higher_is_better: bool
    needs_reference: bool  # reads the FP32 outputs (cosine, agreement, mse), not only labels


METRICS: dict[str, Metric] = {
    "top1": Metric("top1", lambda ref, cand, labels: top1(cand[0], labels), True, True, False),
    "top5": Metric("top5", lambda ref, cand, labels: topk(cand[0], labels, 5), True, True, False),
    "agreement": Metric("agreement", lambda ref, cand, labels: agreement(ref[0], cand[0]), False, True, True),
    "cosine": Metric("cosine", lambda ref, cand, labels: cosine(ref[0], cand[0]), False, True, True),
    "mse": Metric("mse", lambda ref, cand, labels: mse(ref[0], cand[0]), False, False, True),
}


def resolve_metric(name: str) -> Metric:
    """A built-in by name, `topK` for any K, or a plugin `package.module:function` or
    `path/to/file.py:function`. A plugin is code and runs with this process's rights.

    A plugin is called as function(outputs, labels) with every tensor output of one batch (a
    list of arrays, in the model's order; a sequence or map output is left out) and that batch's
    labels (None without --labels); it returns one score per sample, higher is better."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("top") and name[3:].isdigit() and int(name[3:]) > 0:
        k = int(name[3:])
        return Metric(name, lambda ref, cand, labels: topk(cand[0], labels, k), True, True, False)
    if ":" in name:
        module_name, _, attr = name.rpartition(":")
        function = getattr(_import_plugin(name, module_name), attr, None)
        if function is None or not callable(function):
            raise ConfigError(f"metric plugin {name!r}: {module_name} has no function {attr!r}")

        def plugin(ref: Outputs, cand: Outputs, labels: np.ndarray | None) -> np.ndarray:
            try:
                scores = np.asarray(function(cand, labels), dtype=np.float64).reshape(-1)
            except Exception as err:  # the plugin's own fault: one line naming it, not a traceback
                raise DataError(f"metric plugin {name!r} failed: {err.__class__.__name__}: {one_line(err)}") from None
            if scores.size != cand[0].shape[0]:
                raise DataError(f"metric plugin {name!r} returned {scores.size} scores for a batch of {cand[0].shape[0]}")
            return scores

        return Metric(name, plugin, False, True, False)
    raise ConfigError(
        f"unknown metric {name!r}; expected one of: {', '.join(METRICS)}, topK, or a plugin package.module:function"
    )


def drop(reference_score: float, candidate_score: float, higher_is_better: bool) -> float:
    """How much worse the candidate is (positive = worse)."""
    return reference_score - candidate_score if higher_is_better else candidate_score - reference_score


def _import_plugin(name: str, module: str):
    """A plugin's module. A plugin is code: it runs in this process with its rights.

    `package.module` is imported from the installed packages (sys.path as Python set it; the
    working directory is not added). A path to a .py file (`./my_metric.py`, `/opt/m.py`) loads
    that one file: a module beside the user's data is used only when named this way."""
    import hashlib
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    try:
        if module.endswith(".py") or "/" in module:
            path = Path(module).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"metric plugin {name!r}: no file {path}")
            unique = f"lowprec_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
            if unique not in sys.modules:
                spec = importlib.util.spec_from_file_location(unique, path)
                loaded = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(loaded)
                sys.modules[unique] = loaded
            return sys.modules[unique]
        return importlib.import_module(module)
    except ConfigError:
        raise
    except ModuleNotFoundError as err:
        raise ConfigError(f"metric plugin {name!r} cannot be loaded: {one_line(err)} (a module of an installed "
                          f"package, or a path to a .py file)") from None
    except Exception as err:  # the plugin's own code raised while it loaded
        raise DataError(f"metric plugin {name!r} failed while loading: {err.__class__.__name__}: {one_line(err)}") from None

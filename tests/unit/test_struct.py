"""The plain data classes of lowprec's internals, the sha256 behind model identities, and the
package's names loaded on first use."""

from __future__ import annotations

import copy
import hashlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

import lowprec_core as lp
from lowprec_core._digest import SMALL, sha256
from lowprec_core._struct import Struct, factory


class Point(Struct):
    x: int
    y: int = 0
    tags: list[str] = []


class Counter(Struct, frozen=False):
    hits: int = 0
    seen: np.ndarray = factory(lambda: np.zeros(2))


class Rule(Struct, kw_only=True):
    name: str
    weight: float = 1.0


def test_fields_by_position_or_keyword_with_their_defaults():
    assert Point(1) == Point(x=1, y=0) and Point(1, 2).y == 2
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    first, second = Point(1), Point(1)
    first.tags.append("a")
    assert second.tags == []  # an empty list default is each instance's own
    assert Counter().seen is not Counter().seen
    assert Point(1) != (1, 0, []) and Point(1, 2) != Point(1, 3)


@pytest.mark.parametrize(("build", "needle"), [
    (lambda: Point(), "missing the field 'x'"),
    (lambda: Point(1, 2, [], 4), "at most 3 arguments"),
    (lambda: Point(1, x=2), "two values for 'x'"),
    (lambda: Point(1, z=2), "no field 'z'; its fields: x, y, tags"),
    (lambda: Rule("conv"), "keyword arguments only"),
])
def test_a_bad_construction_names_what_is_wrong(build, needle):
    with pytest.raises(TypeError, match=needle):
        build()


def test_frozen_unless_the_class_says_otherwise():
    point = Point(1)
    with pytest.raises(AttributeError, match="Point is frozen: cannot set 'x'"):
        point.x = 2
    with pytest.raises(AttributeError, match="frozen"):
        del point.y
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))
    counter = Counter()
    counter.hits += 1
    assert counter.hits == 1
    with pytest.raises(TypeError):
        hash(counter)  # its fields change: not a dict key


def test_replace_copy_and_pickle_keep_every_field():
    rule = Rule(name="conv", weight=2.0)
    assert rule.replace(weight=3.0) == Rule(name="conv", weight=3.0) and rule.weight == 2.0
    with pytest.raises(TypeError, match="no field 'bias'"):
        rule.replace(bias=1)
    assert pickle.loads(pickle.dumps(rule)) == rule and copy.deepcopy(Point(3, 4)) == Point(3, 4)


@pytest.mark.parametrize("size", [0, 1000, SMALL, SMALL + 1, 3 * SMALL])
def test_sha256_is_sha256_whichever_implementation_hashes(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    streamed = sha256(data[: size // 2], size=size)
    streamed.update(data[size // 2:])
    assert streamed.hexdigest() == hashlib.sha256(data).hexdigest()


def test_every_public_name_resolves_and_is_listed():
    assert set(lp.__all__) == set(lp._EXPORTS) | {"__version__"}
    for name in lp.__all__:
        assert getattr(lp, name) is not None
    assert set(lp.__all__) <= set(dir(lp))
    with pytest.raises(AttributeError, match="no attribute 'quantise'"):
        lp.quantise  # noqa: B018
    # `from lowprec_core import X` in a fresh process, as the components do it
    done = subprocess.run([sys.executable, "-c", "from lowprec_core import QuantConfig, publish; print(QuantConfig().preset)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == lp.QuantConfig().preset

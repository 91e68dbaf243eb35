"""The shared argument checks (fastload/_validate.py) and their use by the public constructors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import fastload as fl
from fastload import _validate as v
from fastload.errors import ConfigError


# --------------------------------------------------------------------------- predicates
@pytest.mark.parametrize("value", [0, 7, -3, np.int64(4), np.uint8(2), np.int32(-1)])
def test_is_integer_accepts_python_and_numpy_ints(value):
    assert v.is_integer(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, "1", None, np.float32(2)])
def test_is_integer_refuses_bools_floats_and_strings(value):
    assert not v.is_integer(value)


@pytest.mark.parametrize("value", [0, 1.5, np.float64(2.0), np.int16(3), math.inf])
def test_is_number_accepts_real_numbers(value):
    assert v.is_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), "1.0", None, 1j, Fraction(1, 2)])
def test_is_number_refuses_bools_strings_and_others(value):
    assert not v.is_number(value)


# --------------------------------------------------------------------------- integer
def test_integer_returns_a_plain_int():
    out = v.integer(np.int64(5), name="n", minimum=1)
    assert out == 5
    assert type(out) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_integer_refuses_bool(value):
    with pytest.raises(ConfigError, match=r"^fl\.X: n must be an integer >= 0, got "):
        v.integer(value, name="n", minimum=0, owner="fl.X")


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, {"minimum": 1}, "fl.Loader: batch_size must be an integer >= 1, got 0"),
        (
            10,
            {"minimum": 0, "maximum": 9},
            "fl.Loader: batch_size must be an integer between 0 and 9, got 10",
        ),
        (2.0, {"minimum": 1}, "fl.Loader: batch_size must be an integer >= 1, got 2.0"),
        ("4", {}, "fl.Loader: batch_size must be an integer, got '4'"),
    ],
)
def test_integer_message_names_owner_parameter_and_what_is_allowed(value, kwargs, message):
    with pytest.raises(ConfigError) as raised:
        v.integer(value, name="batch_size", owner="fl.Loader", **kwargs)
    assert str(raised.value) == message


def test_integer_without_owner_names_only_the_parameter():
    with pytest.raises(ConfigError) as raised:
        v.integer(-1, name="seed", minimum=0)
    assert str(raised.value) == "seed must be an integer >= 0, got -1"


def test_optional_integer():
    assert v.optional_integer(None, name="m", minimum=0) is None
    assert v.optional_integer(np.int8(3), name="m", minimum=0) == 3
    with pytest.raises(ConfigError, match=r"^o: m must be an integer >= 0 or None, got -1$"):
        v.optional_integer(-1, name="m", minimum=0, owner="o")


# --------------------------------------------------------------------------- number
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_number_refuses_nan_and_inf(value):
    with pytest.raises(ConfigError, match=r"^fl\.Mix: weights\['a'\] must be a finite number > 0"):
        v.number(value, name="weights['a']", above=0, owner="fl.Mix")


def test_number_bounds_and_result():
    assert v.number(np.float32(0.5), name="x", minimum=0, maximum=1) == 0.5
    assert type(v.number(3, name="x")) is float
    with pytest.raises(ConfigError, match="x must be a finite number > 0, got 0"):
        v.number(0, name="x", above=0)
    with pytest.raises(ConfigError, match=r"x must be a finite number between 0 and 1, got 1\.5"):
        v.number(1.5, name="x", minimum=0, maximum=1)
    with pytest.raises(ConfigError, match="x must be a finite number, got True; a hint"):
        v.number(True, name="x", hint="; a hint")


# --------------------------------------------------------------------------- flag, choice
def test_flag():
    assert v.flag(np.bool_(True), name="f") is True
    for value in (1, 0, "yes", None):
        with pytest.raises(ConfigError, match=r"^o: f must be True or False, got "):
            v.flag(value, name="f", owner="o")


def test_choice():
    assert v.choice("lz4", ("lz4", "zstd"), name="codec") == "lz4"
    with pytest.raises(ConfigError) as raised:
        v.choice("snappy", ("lz4", "zstd"), name="codec", owner="fl.create_store")
    assert (
        str(raised.value) == "fl.create_store: codec must be one of ('lz4', 'zstd'), got 'snappy'"
    )
    with pytest.raises(ConfigError, match="codec must be one of"):
        v.choice(["lz4"], {"lz4"}, name="codec")  # unhashable: refused, not a TypeError


def test_on_behalf_of_prefixes_the_owner():
    with pytest.raises(ConfigError) as raised, v.on_behalf_of("fl.Loader"):
        v.integer(0, name="batch_size", minimum=1)
    assert str(raised.value) == "fl.Loader: batch_size must be an integer >= 1, got 0"


# --------------------------------------------------------------------------- public constructors
@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "v.zarr"
    fl.write_arrays(path, {"train": {"x": np.arange(8.0), "y": np.arange(8)}})
    return fl.open_store(path)["train"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": True}, r"fl\.Loader: batch_size must be an integer >= 1, got True"),
        ({"workers": 1.0}, r"fl\.Loader: workers must be an integer >= 0, got 1\.0"),
        ({"copy": "yes"}, r"fl\.Loader: copy must be True or False, got 'yes'"),
        ({"timeout_s": math.nan}, r"fl\.Loader: timeout_s must be a finite number > 0, got nan"),
        ({"max_worker_restarts": -1}, r"fl\.Loader: max_worker_restarts must be an integer >= 0"),
        ({"max_kept_bytes": -1}, r"fl\.Loader: max_kept_bytes must be an integer >= 0 or None"),
    ],
)
def test_loader_refuses_bad_options_naming_them(split, kwargs, message):
    kwargs = {"batch_size": 4, "workers": 0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        fl.Loader(split, **kwargs)


def test_loader_accepts_numpy_integers(split):
    with fl.Loader(split, np.int64(4), workers=np.int32(0), seed=np.uint16(3)) as loader:
        assert len(loader) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"weights": (1.0, math.inf)},
            r"fl\.Mix: weights\['b'\] must be a finite number > 0, got inf",
        ),
        ({"policy": "cycle", "num_samples": 2.5}, r"fl\.Mix: num_samples must be an integer >= 1"),
        ({"num_samples": 10}, r"fl\.Mix: num_samples=10 only applies to policy='cycle'"),
        ({"policy": "longest"}, r"fl\.Mix: policy must be one of"),
        ({"label_field": 3}, r"fl\.Mix: label_field must be a field name or None"),
    ],
)
def test_mix_refuses_what_the_loader_would_refuse_later(split, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        fl.Mix({"a": split, "b": split}, **kwargs)


def test_create_store_names_itself(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^fl\.create_store: clevel must be an integer between 0 and 9, got 10$"
    ):
        fl.create_store(tmp_path / "c.zarr", clevel=10)
    with pytest.raises(ConfigError, match=r"^fl\.create_store: overwrite must be True or False"):
        fl.create_store(tmp_path / "c.zarr", overwrite="no")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: fl.transforms.KNNAdjacency(k=2.5),
            r"^KNNAdjacency: k must be an integer >= 1, got 2\.5$",
        ),
        (
            lambda: fl.transforms.KNNAdjacency(k=True),
            r"^KNNAdjacency: k must be an integer >= 1, got True$",
        ),
        (
            lambda: fl.transforms.PadTruncate("p", length="8"),
            r"^PadTruncate: length must be an integer",
        ),
        (
            lambda: fl.transforms.OneHot("y", n_classes=0),
            r"^OneHot: n_classes must be an integer >= 1, got 0$",
        ),
    ],
)
def test_transforms_refuse_non_integer_sizes(build, message):
    """A float or bool size is a ConfigError, not silently truncated by int()."""
    with pytest.raises(ConfigError, match=message):
        build()

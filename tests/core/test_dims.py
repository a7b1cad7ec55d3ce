"""graphnet.dims: the dimension algebra (static ints, symbolic expressions, unknown), pinned to
examples worked by hand, and to evaluation at random sizes for the identities it relies on."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import dims
from graphnet.dims import (
    add,
    bind_shape,
    broadcast_dim,
    ceildiv,
    differ,
    evaluate,
    exact_div,
    floordiv,
    format_dim,
    mul,
    parse_dim,
    prod,
    same,
    sub,
    unify,
)


def test_canonical_forms():
    assert add("N", "N") == "2*N"
    assert mul(4, "N") == mul("N", 4) == "4*N"
    assert add(mul(2, "N"), 3) == "2*N + 3"
    assert sub("H", 2) == "H - 2"
    assert sub(2, "N") == "2 - N"
    assert mul("N", "M") == mul("M", "N") == "M*N"
    assert prod(["N", 3, 4]) == "12*N"
    assert sub("N", "N") == 0 and add(2, 3) == 5
    assert parse_dim("2*N + 0") == "2*N" and parse_dim("3") == 3 and parse_dim("") is None
    assert parse_dim("N + N") == "2*N" and parse_dim("2*s0") == "2*s0"


def test_names_from_other_tools_are_one_symbol():
    # Only spaced " + " / " - " and "*" are operators: "batch-size" is a name, not a difference.
    assert parse_dim("batch-size") == "batch-size"
    assert add("batch-size", "batch-size") == "2*batch-size"
    assert parse_dim("N+1") == "N+1"  # unspaced: a name too
    assert dims.atoms("N+1") == {"N+1"}


def test_unknown_is_never_equal_to_anything():
    assert add(None, 3) is None and mul("N", None) is None and prod(["N", None]) is None
    assert not same(None, None) and not same(None, "N") and not differ(None, 3)
    assert broadcast_dim("N", None) is None  # N may be 1, then the unknown dim wins
    assert unify(None, "N") == "N" and unify("N", 4) == 4


def test_relations():
    assert same("2*N", add("N", "N")) and not same("N", "M")
    assert differ("N", add("N", 1)) and differ(3, 4)
    assert not differ("N", "M") and not differ("N", 3)  # may be equal
    assert broadcast_dim(1, "N") == "N" and broadcast_dim("N", 1) == "N"
    assert broadcast_dim("N", 5) == 5  # N must then be 1 or 5: the output is 5 either way
    assert broadcast_dim("N", "N") == "N" and broadcast_dim("N", "M") is None


def test_division():
    assert exact_div("12*N", 3) == "4*N" and exact_div("M*N", "M") == "N"
    assert exact_div("12*N", "4*N") == 3 and exact_div("N", 2) is None
    assert exact_div(12, 5) is None and exact_div(12, 4) == 3
    assert floordiv("2*N + 4", 2) == "N + 2"
    assert floordiv(sub("H", 1), 2) == "floor((H - 1)/2)"
    assert add(floordiv(sub("H", 1), 2), 1) == "floor((H - 1)/2) + 1"
    assert ceildiv("H", 2) == "floor((H + 1)/2)"


@pytest.mark.parametrize("seed", range(5))
def test_expressions_evaluate_to_the_arithmetic_they_name(seed):
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(1, 50, 2))
    env = {"N": n, "M": m}
    cases = {
        add("N", "M"): n + m,
        sub(mul(3, "N"), 2): 3 * n - 2,
        mul(add("N", 1), "M"): (n + 1) * m,
        floordiv(add("N", 5), 3): (n + 5) // 3,
        add(floordiv(sub("N", 1), 2), 1): (n - 1) // 2 + 1,
        ceildiv("M", 4): -(-m // 4),
        exact_div(mul(6, mul("N", "M")), mul(2, "M")): 3 * n,
    }
    for expr, want in cases.items():
        assert evaluate(expr, env) == want, expr
        assert evaluate(parse_dim(format_dim(expr)), env) == want  # written and read back


def test_bind_shape_binds_symbols_and_checks_expressions():
    env: dict[str, int] = {}
    assert bind_shape(("N", 3, "2*N"), (4, 3, 8), env) is None and env == {"N": 4}
    assert bind_shape(("N", 5), (2, 5), env) == "dim 0 is 2, but N = 4 elsewhere"
    assert bind_shape(("N", 3, "2*N"), (4, 3, 7), {}) == "dim 2 is 7, but 2*N = 8"
    assert bind_shape((None, 3), (9, 3), {}) is None
    assert bind_shape((2, 3), (2, 4), {}) == "dim 1 is 4, not 3"
    assert bind_shape((2,), (2, 4), {}) == "rank 2 != 1"


def test_format():
    assert format_dim(None) == "?" and format_dim("4*N") == "4*N" and format_dim(3) == "3"
    with pytest.raises(TypeError):
        parse_dim(2.5)

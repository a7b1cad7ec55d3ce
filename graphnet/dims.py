"""Dimensions: what a value's shape says about each axis.

A dim is one of
- an `int`: static, known when the graph is built;
- a `str`: a symbol or an expression of symbols, dynamic but with a KNOWN RELATION to the other
  dims of the graph: "N" (the batch), "4*N" (a Flatten that folds an axis of 4 into the batch),
  "2*N" (a Concat along the batch axis of two batches), "H - 2" (a valid 3x3 convolution of a
  dynamic height), "floor((H - 1)/2) + 1" (a strided one). Two equal strings are the same size
  in every run; different strings have no known relation (they may or may not be equal);
- `None`: unknown. Nothing is known about it, not even that it equals another unknown dim.

Code that asks "is this dim known now?" tests `isinstance(d, int)` (`is_static`), never
`d is None`. Expressions are polynomials with integer coefficients over atoms (symbols, and
floor-divisions that do not divide exactly), written canonically by `format_dim`, so equal
expressions are equal strings: `add("N", "N") == "2*N"`, `mul(4, "N") == "4*N"`. Operators are
" + " and " - " (spaced) and "*": any other string, e.g. ONNX's dim_param "batch-size", is one
symbol, so a name from another tool is never misread as arithmetic.

In an exported ONNX file a symbolic dim is written as its string (dim_param) and an unknown one
as a dim with neither value nor name: onnxruntime takes equal dim_params for equal sizes, so
only relations that hold for every input may be written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TypeGuard

__all__ = [
    "Dim",
    "BATCH",
    "is_static",
    "is_symbolic",
    "parse_dim",
    "format_dim",
    "add",
    "sub",
    "mul",
    "prod",
    "floordiv",
    "ceildiv",
    "exact_div",
    "same",
    "differ",
    "unify",
    "broadcast_dim",
    "evaluate",
    "atoms",
    "bind_shape",
]

Dim = int | str | None
BATCH = "N"

# A polynomial: ((monomial, coefficient), ...) sorted, monomial = sorted tuple of atom names.
_Poly = tuple[tuple[tuple[str, ...], int], ...]
_INT = re.compile(r"^[0-9]+$")


def is_static(d: object) -> TypeGuard[int]:
    """An int dim (not a bool): known now."""
    return isinstance(d, int) and not isinstance(d, bool)


def is_symbolic(d: object) -> TypeGuard[str]:
    return isinstance(d, str)


# ------------------------------------------------------------------------------------- parsing
def _split_top(text: str, seps: tuple[str, ...]) -> list[tuple[str, str]]:
    """Split `text` at the separators that are not inside parentheses: [(sep before, part)]."""
    parts, depth, start, k, sep_before = [], 0, 0, 0, ""
    while k < len(text):
        c = text[k]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0:
            hit = next((s for s in seps if text.startswith(s, k)), None)
            if hit is not None:
                parts.append((sep_before, text[start:k]))
                sep_before, k = hit, k + len(hit)
                start = k
                continue
        k += 1
    parts.append((sep_before, text[start:]))
    return parts


@lru_cache(maxsize=4096)
def _parse(text: str) -> _Poly:
    terms: dict[tuple[str, ...], int] = {}
    body, sign0 = text.strip(), 1
    if body.startswith("-") and len(body) > 1 and not body[1].isspace():
        body, sign0 = body[1:], -1
    for sep, term in _split_top(body, (" + ", " - ")):
        sign = -1 if sep == " - " else 1
        if not sep:
            sign = sign0
        coef, atoms_ = sign, []
        for _, factor in _split_top(term.strip(), ("*",)):
            factor = factor.strip()
            if _INT.match(factor):
                coef *= int(factor)
            elif factor:
                atoms_.append(factor)
            else:  # an empty factor ("2*", "*N"): not an expression, one symbol
                return (((text,), 1),)
        key = tuple(sorted(atoms_))
        terms[key] = terms.get(key, 0) + coef
    return _norm(terms)


def _norm(terms: Mapping[tuple[str, ...], int]) -> _Poly:
    return tuple(
        sorted(((m, c) for m, c in terms.items() if c), key=lambda mc: (-len(mc[0]), mc[0]))
    )


def _poly(d: int | str) -> _Poly:
    if is_static(d):
        return (((), int(d)),) if d else ()
    return _parse(str(d))


def _factor_text(atom: str) -> str:
    return atom


@lru_cache(maxsize=4096)
def _format(p: _Poly) -> int | str:
    if not p:
        return 0
    if len(p) == 1 and not p[0][0]:
        return p[0][1]
    pos = [(m, c) for m, c in p if c > 0]
    neg = [(m, -c) for m, c in p if c < 0]

    def term(m: tuple[str, ...], c: int) -> str:
        factors = ([str(c)] if c != 1 or not m else []) + [_factor_text(a) for a in m]
        return "*".join(factors)

    if pos:
        text = " + ".join(term(m, c) for m, c in pos)
    else:
        m, c = neg.pop(0)
        text = "-" + term(m, c)
    for m, c in neg:
        text += " - " + term(m, c)
    return text


def parse_dim(d: object) -> Dim:
    """A dim from a shape written anywhere (ints, numeric strings, expressions, None), in the
    canonical form: "2*N + 0" -> "2*N", "3" -> 3, "" -> None."""
    if d is None or is_static(d):
        return d
    if isinstance(d, str):
        if not d.strip():
            return None
        return _format(_parse(d))
    raise TypeError(f"a dim is an int, a str or None, got {d!r}")


def format_dim(d: Dim) -> str:
    """How a dim is shown: its int, its expression, or "?" when unknown."""
    return "?" if d is None else str(d)


# ---------------------------------------------------------------------------------- arithmetic
def _combine(a: Dim, b: Dim, sign: int) -> Dim:
    if a is None or b is None:
        return None
    if is_static(a) and is_static(b):
        return int(a) + sign * int(b)
    terms = dict(_poly(a))
    for m, c in _poly(b):
        terms[m] = terms.get(m, 0) + sign * c
    return _format(_norm(terms))


def add(a: Dim, b: Dim) -> Dim:
    return _combine(a, b, 1)


def sub(a: Dim, b: Dim) -> Dim:
    return _combine(a, b, -1)


def mul(a: Dim, b: Dim) -> Dim:
    if a is None or b is None:
        return None
    if is_static(a) and is_static(b):
        return int(a) * int(b)
    terms: dict[tuple[str, ...], int] = {}
    for ma, ca in _poly(a):
        for mb, cb in _poly(b):
            m = tuple(sorted(ma + mb))
            terms[m] = terms.get(m, 0) + ca * cb
    return _format(_norm(terms))


def prod(dims: Iterable[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def floordiv(a: Dim, k: int) -> Dim:
    """floor(a / k) for a positive int k: exact when k divides every coefficient, else an atom
    "floor((a)/k)" (an expression of a, so equal computations give equal dims)."""
    if a is None:
        return None
    if is_static(a):
        return int(a) // k
    if k == 1:
        return a
    p = _poly(a)
    if all(c % k == 0 for _, c in p):
        return _format(tuple((m, c // k) for m, c in p))
    return f"floor(({a})/{k})"


def ceildiv(a: Dim, k: int) -> Dim:
    """ceil(a / k) for a positive int k."""
    return floordiv(add(a, k - 1), k)


def exact_div(a: Dim, b: Dim) -> Dim:
    """a / b when b divides a exactly as polynomials (b an int or one monomial), else None (a
    static remainder raises nothing here: the caller reports it)."""
    if a is None or b is None:
        return None
    if is_static(a) and is_static(b):
        return int(a) // int(b) if b and int(a) % int(b) == 0 else None
    pb = _poly(b)
    if len(pb) != 1 or pb[0][1] == 0:
        return None
    mb, cb = pb[0]
    out: dict[tuple[str, ...], int] = {}
    for m, c in _poly(a):
        rest = list(m)
        for atom in mb:
            if atom not in rest:
                return None
            rest.remove(atom)
        if c % cb:
            return None
        out[tuple(rest)] = out.get(tuple(rest), 0) + c // cb
    return _format(_norm(out))


# --------------------------------------------------------------------------------- relations
def same(a: Dim, b: Dim) -> bool:
    """Provably equal in every run: equal ints, or equal expressions. An unknown dim is never
    the same as anything."""
    if a is None or b is None:
        return False
    if is_static(a) and is_static(b):
        return a == b
    return _poly(a) == _poly(b)


def differ(a: Dim, b: Dim) -> bool:
    """Provably different in every run: different ints, or expressions whose difference is a
    nonzero constant ("N" vs "N + 1")."""
    if a is None or b is None:
        return False
    d = sub(a, b)
    return is_static(d) and d != 0


def unify(a: Dim, b: Dim) -> Dim:
    """The dim of an axis along which two inputs must be equal (Concat's other axes, a matrix
    product's inner dims): an int when either is one, else either expression (the op only runs
    when they are equal), else unknown. Callers check `differ` first."""
    if is_static(a):
        return a
    if is_static(b):
        return b
    return a if a is not None else b


def broadcast_dim(a: Dim, b: Dim) -> Dim:
    """The output dim of NumPy/ONNX broadcasting of two dims, as far as it is known: a 1 gives
    the other; equal dims give themselves; a static size > 1 wins (the other must be 1 or equal);
    two expressions not provably equal, or an unknown, give unknown (either may be 1)."""
    if a == 1:
        return b
    if b == 1:
        return a
    if is_static(a):
        return a
    if is_static(b):
        return b
    if same(a, b):
        return a
    return None


# ------------------------------------------------------------------------------- evaluation
def atoms(d: Dim) -> set[str]:
    """The symbols (and floor-division atoms) a dim is made of."""
    if not is_symbolic(d):
        return set()
    return {a for m, _ in _poly(d) for a in m}


def evaluate(d: Dim, env: Mapping[str, int]) -> int | None:
    """The size of `d` when each symbol has the size `env` gives (None if one is missing)."""
    if d is None:
        return None
    if is_static(d):
        return int(d)
    total = 0
    for m, c in _poly(d):
        v = c
        for a in m:
            x = env.get(a)
            if x is None:
                x = _evaluate_floor(a, env)
            if x is None:
                return None
            v *= x
        total += v
    return total


_FLOOR = re.compile(r"^floor\(\((.*)\)/([0-9]+)\)$")


def _evaluate_floor(atom: str, env: Mapping[str, int]) -> int | None:
    m = _FLOOR.match(atom)
    if not m:
        return None
    inner = evaluate(parse_dim(m.group(1)), env)
    return None if inner is None else inner // int(m.group(2))


def bind_shape(declared: Sequence[Dim], actual: Sequence[int], env: dict[str, int]) -> str | None:
    """Check an actual shape against a declared one, binding plain symbols in `env` (shared
    across the inputs of a run: every "N" is one size). Returns what is wrong, or None."""
    if len(declared) != len(actual):
        return f"rank {len(actual)} != {len(declared)}"
    later = []
    for k, (d, a) in enumerate(zip(declared, actual, strict=True)):
        if d is None:
            continue
        if is_static(d):
            if d != a:
                return f"dim {k} is {a}, not {d}"
            continue
        p = _poly(d)
        if len(p) == 1 and len(p[0][0]) == 1 and p[0][1] == 1:  # a plain symbol
            sym = p[0][0][0]
            if sym in env and env[sym] != a:
                return f"dim {k} is {a}, but {sym} = {env[sym]} elsewhere"
            env.setdefault(sym, a)
        else:
            later.append((k, d, a))
    for k, d, a in later:  # expressions, once their symbols are bound
        want = evaluate(d, env)
        if want is not None and want != a:
            return f"dim {k} is {a}, but {d} = {want}"
    return None

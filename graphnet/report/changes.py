"""What `optimize` did to each node, for the before/after views.

Two sources, combined:

- structure: a node of the original graph that is not in the optimized one (by name) was
  removed; a node only in the optimized graph was added; a node in both whose op, attributes
  or parameter values differ was changed (a Conv whose weights absorbed a BatchNormalization);
- the pass reports: every line a pass wrote ("folded bn1 into conv1 (Conv)", "declined: bn3:
  conv3 output also feeds add7") is attached, with its pass's name, to every node it names. A
  declined line marks its subject (the node named before the first colon) as declined when
  nothing else happened to it, so the reason a fold did not happen is on the node it concerns.

A changed node that a removed node's line names gets a badge naming what it absorbed ("+BN").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from graphnet.ir import Graph, Node
from graphnet.report.drawing import Mark

__all__ = ["Change", "Changes", "diff_graphs"]

_SPLIT = re.compile(r"[\s,;()\[\]{}'\"`]+")
# A line with more mentions of nodes than this is a bulk statement ("dropped 28 parameter(s)
# ...: bn1.scale, bn1.bias, ..."): it is listed in the report but not attached to each node.
_BULK = 8
# Lines naming more nodes than this do not make badges (who absorbed whom is not clear).
_BADGE_MAX = 3
_SHORT = {
    "BatchNormalization": "BN",
    "Dropout": "Dropout",
    "InstanceNormalization": "IN",
    "Identity": "Id",
}


@dataclass
class Change:
    """One report line: the pass that wrote it (and that pass's position in the pipeline: a pass
    may run twice), the text, whether it is a decline, and the node names it mentions (those of
    either graph)."""

    pass_name: str
    text: str
    declined: bool
    nodes: list[str] = field(default_factory=list)
    pass_index: int = 0


@dataclass
class Changes:
    """Marks for the nodes of the original (`before`) and optimized (`after`) graphs, and every
    report line with the nodes it names (the report lists them, and a click highlights them)."""

    before: dict[str, Mark] = field(default_factory=dict)
    after: dict[str, Mark] = field(default_factory=dict)
    lines: list[Change] = field(default_factory=list)

    def count(self, status: str, *, after: bool = False) -> int:
        marks = self.after if after else self.before
        return sum(1 for m in marks.values() if m.status == status)


def _mentions(text: str, names: set[str]) -> list[str]:
    """Node names a report line mentions: its tokens, without trailing punctuation or "'s",
    and their prefixes at dots ("bn1.scale" names bn1). Ordered by first mention; a name is
    listed once per mention."""
    found: list[str] = []
    for tok in _SPLIT.split(text):
        tok = tok.rstrip(".:")
        if tok.endswith("'s"):
            tok = tok[:-2]
        cand = tok
        while cand:
            if cand in names:
                found.append(cand)
                break
            cut = cand.rfind(".")
            cand = cand[:cut] if cut > 0 else ""
    return found


def _params_of(g: Graph, n: Node) -> list[np.ndarray | None]:
    return [g.params.get(i) if i else None for i in n.inputs]


def _same_attrs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
                return False
            if x.shape != y.shape or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def _changed(before: Graph, after: Graph, a: Node, b: Node) -> bool:
    if a.op != b.op or not _same_attrs(a.attrs, b.attrs):
        return True
    pa, pb = _params_of(before, a), _params_of(after, b)
    if len(pa) != len(pb):
        return True
    for x, y in zip(pa, pb, strict=True):
        if x is None or y is None:
            if (x is None) != (y is None):
                return True
            continue
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return True
    return False


def diff_graphs(before: Graph, after: Graph, report=None) -> Changes:
    """Marks for both graphs from their structure and, when given, the pipeline report
    (`graphnet.passes.base.PipelineReport`) of the `optimize` that made `after`."""
    out = Changes()
    b_nodes = {n.name: n for n in before.nodes}
    a_nodes = {n.name: n for n in after.nodes}
    for name in b_nodes:
        if name not in a_nodes:
            out.before[name] = Mark("removed")
        elif _changed(before, after, b_nodes[name], a_nodes[name]):
            out.before[name] = Mark("changed")
            out.after[name] = Mark("changed")
    for name in a_nodes:
        if name not in b_nodes:
            out.after[name] = Mark("added")
    names = set(b_nodes) | set(a_nodes)
    for k, p in enumerate(getattr(report, "passes", []) or []):
        for line in p.lines:
            declined = line.startswith(p.DECLINED)
            text = line[len(p.DECLINED) :] if declined else line
            mentions = _mentions(text, names)
            mentioned = list(dict.fromkeys(mentions))
            out.lines.append(Change(p.name, text, declined, mentioned, k))
            if len(mentions) <= _BULK:
                _attach(out, p.name, text, declined, mentioned, b_nodes, a_nodes)
    _badges(out, b_nodes, a_nodes)
    return out


def _attach(
    out: Changes,
    pass_name: str,
    text: str,
    declined: bool,
    mentioned: list[str],
    b_nodes: dict[str, Node],
    a_nodes: dict[str, Node],
) -> None:
    note = f"{pass_name}: {'declined: ' if declined else ''}{text}"
    subject = None
    if declined and mentioned:
        head = text.split(":", 1)[0]
        inside = _mentions(head, set(mentioned))
        subject = inside[0] if inside else mentioned[0]
    for name in mentioned:
        for marks, nodes in ((out.before, b_nodes), (out.after, a_nodes)):
            if name not in nodes:
                continue
            mark = marks.setdefault(name, Mark())
            if note not in mark.notes:
                mark.notes.append(note)
            if declined and name == subject and not mark.status:
                mark.status = "declined"
            elif not declined and not mark.status and marks is out.after and name in b_nodes:
                # The pass says it did something to a node that kept its op, attributes and
                # parameters (a rewiring): shown as changed, with the pass's words.
                mark.status = "changed"
                out.before.setdefault(name, Mark()).status = out.before[name].status or "changed"


def _badges(out: Changes, b_nodes: dict[str, Node], a_nodes: dict[str, Node]) -> None:
    """A changed node named on the same line as removed nodes absorbed them: "+BN" (a removed
    node of the same op was merged into it: "merged")."""
    absorbed: dict[str, list[str]] = {}
    for ch in out.lines:
        if ch.declined or len(ch.nodes) > _BADGE_MAX:
            continue
        gone = [n for n in ch.nodes if n in b_nodes and n not in a_nodes]
        kept = [
            n for n in ch.nodes if n in b_nodes and out.after.get(n, Mark()).status == "changed"
        ]
        for k in kept:
            for g in gone:
                op = b_nodes[g].op
                # A node merged into its twin (cse) is "merged", not "+Conv".
                label = "merged" if op == b_nodes[k].op else _SHORT.get(op, op)
                if len(label) > 8:
                    label = label[:7] + "\u2026"
                if label not in absorbed.setdefault(k, []):
                    absorbed[k].append(label)
    for name, labels in absorbed.items():
        plus = [lb for lb in labels if lb != "merged"]
        badge = "+" + "+".join(plus[:3]) + ("\u2026" if len(plus) > 3 else "") if plus else ""
        badge = " ".join(b for b in (badge, "merged" if "merged" in labels else "") if b)
        for marks in (out.before, out.after):
            if name in marks:
                marks[name].badge = badge

"""PromQL syntax trees: escaping, bounds on custom queries, and namespace scoping by injection.

Pure: no I/O. Queries are parsed with ``promql-parser`` (PyPI; Python bindings of GreptimeDB's Rust
PromQL parser), then:

* :func:`check_bounds` refuses what cannot be bounded: a selector that does not name its metric
  (``{__name__=~".+"}`` reads every series), a range or subquery window longer than
  ``QueryLimits.max_range``, a subquery without an explicit resolution or finer than
  ``QueryLimits.min_subquery_step``, and nested subqueries that evaluate more points than one
  subquery may.
* :func:`to_promql` prints the tree back, optionally adding one equality matcher to every vector
  selector (namespace scoping). Selectors that already match that label must match it with ``=``
  and the same value; anything else is refused.

Why our own printer: the library's ``str()`` writes label values unescaped (``a="x"y"``: a hostile
value would end the literal), drops sub-second durations (``[5m:1ms]`` becomes ``[5m:0s]``) and
loses the colon of ``[30m:]``. Every node is printed here instead, strings with
:func:`promql_string`, and the printed text is parsed again: it must give the same tree plus the
injected matchers, or the query is refused (fail closed). What Prometheus runs is therefore exactly
the tree that was checked.

The Rust parser recurses without a depth limit (about 20,000 nested parentheses crash the process),
so queries longer than :data:`MAX_QUERY_LENGTH` characters are refused before parsing, and trees
deeper than :data:`MAX_DEPTH` before this module's own recursion.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import promql_parser as pp

from mlcanary.durations import format_duration

MAX_QUERY_LENGTH: Final = 4096
MAX_DEPTH: Final = 64

# Functions that read series no selector names (info() joins target_info implicitly): they escape
# both the bounds and the scoping.
IMPLICIT_READS: Final = frozenset({"info"})

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class QueryTemplateError(ValueError):
    """A query that cannot be rendered, parsed, bounded or scoped safely."""


# --------------------------------------------------------------------------------------- escaping

_REGEX_META = frozenset("\\.+*?()|[]{}^$")


def escape_string_content(value: str, quote: str = '"') -> str:
    """Escape ``value`` for the inside of a PromQL string literal delimited by ``quote``.

    PromQL strings follow Go's escapes. Backslash and the quote are escaped, and every control
    character (a raw newline would end the literal with a lexer error) becomes ``\\uXXXX``; other
    characters pass through as UTF-8, which Prometheus accepts in strings.
    """
    out: list[str] = []
    for char in value:
        code = ord(char)
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise QueryTemplateError("value contains a lone surrogate; it is not valid Unicode text")
        else:
            out.append(char)
    return "".join(out)


def promql_string(value: str) -> str:
    """``value`` as a complete double-quoted PromQL string literal."""
    return '"' + escape_string_content(value) + '"'


def regex_escape(value: str) -> str:
    """Escape RE2 metacharacters so that ``value`` matches only itself in ``=~``/``!~`` matchers."""
    return "".join("\\" + c if c in _REGEX_META else c for c in value)


def check_label_name(name: str) -> str:
    if not LABEL_NAME.match(name):
        raise QueryTemplateError(f"{name!r} is not a Prometheus label name")
    return name


# ----------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class QueryLimits:
    """What a custom query may ask of Prometheus (operator settings, see :mod:`mlcanary.settings`)."""

    max_range: timedelta = timedelta(hours=1)
    min_subquery_step: timedelta = timedelta(seconds=10)

    def __post_init__(self) -> None:
        if self.max_range <= timedelta(0) or self.min_subquery_step <= timedelta(0):
            raise ValueError("query limits must be positive durations")

    @classmethod
    def from_seconds(cls, max_range: float, min_subquery_step: float) -> QueryLimits:
        return cls(timedelta(seconds=max_range), timedelta(seconds=min_subquery_step))

    @property
    def max_subquery_points(self) -> int:
        """Points one subquery may evaluate: a window of ``max_range`` at ``min_subquery_step``."""
        return max(1, int(self.max_range / self.min_subquery_step))


DEFAULT_LIMITS: Final = QueryLimits()

# ---------------------------------------------------------------------------------------- parsing

# Prometheus 2.x's name of double_exponential_smoothing; the parser follows Prometheus 3.
for _function in (
    pp.Function(
        "holt_winters", [pp.ValueType.Matrix, pp.ValueType.Scalar, pp.ValueType.Scalar], pp.ValueType.Vector
    ),
):
    with contextlib.suppress(ValueError):  # already registered, or built in to a later parser
        pp.register_extra_functions([_function])


def parse(promql: str) -> pp.Expr:
    """Parse PromQL; raise :class:`QueryTemplateError` with the parser's message."""
    if len(promql) > MAX_QUERY_LENGTH:
        raise QueryTemplateError(
            f"query is {len(promql)} characters long; at most {MAX_QUERY_LENGTH} are allowed"
        )
    try:
        expr = pp.parse(promql)
    except Exception as error:
        raise QueryTemplateError(f"not valid PromQL: {error}") from None
    if _depth(expr) > MAX_DEPTH:
        raise QueryTemplateError(f"query is nested more than {MAX_DEPTH} levels deep")
    return expr


def _children(expr: pp.Expr) -> list[pp.Expr]:
    match expr:
        case pp.AggregateExpr():
            return [c for c in (expr.param, expr.expr) if isinstance(c, pp.Expr)]
        case pp.BinaryExpr():
            return [expr.lhs, expr.rhs]
        case pp.UnaryExpr() | pp.ParenExpr() | pp.SubqueryExpr():
            return [expr.expr]
        case pp.MatrixSelector():
            return [expr.vector_selector]
        case pp.Call():
            return [a for a in expr.args if isinstance(a, pp.Expr)]
        case pp.VectorSelector() | pp.NumberLiteral() | pp.StringLiteral():
            return []
    raise QueryTemplateError(f"unsupported PromQL construct {type(expr).__name__}")


def _depth(expr: pp.Expr) -> int:
    """Depth of the tree, without recursion (the tree may be deeper than Python's stack)."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in _children(node))
    return deepest


def walk(expr: pp.Expr) -> Iterator[pp.Expr]:
    """Every node, parents first."""
    yield expr
    for child in _children(expr):
        yield from walk(child)


def selectors(expr: pp.Expr) -> list[pp.VectorSelector]:
    return [node for node in walk(expr) if isinstance(node, pp.VectorSelector)]


# ----------------------------------------------------------------------------------------- bounds


def human_duration(delta: timedelta) -> str:
    """``1h``, ``90s``, ``1500ms``: the largest unit that divides the duration (for messages)."""
    millis = round(delta / timedelta(milliseconds=1))
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def _shown(expr: pp.Expr) -> str:
    text = to_promql(expr)
    return text if len(text) <= 80 else text[:77] + "..."


def _names_its_metric(selector: pp.VectorSelector) -> bool:
    return selector.name is not None or any(
        m.name == "__name__" and m.op == pp.MatchOp.Equal and m.value for m in selector.matchers.matchers
    )


def bound_problems(expr: pp.Expr, limits: QueryLimits) -> list[str]:
    """Why ``expr`` cannot be bounded, one sentence per problem (empty: it can)."""
    problems: list[str] = []
    max_range = f"{human_duration(limits.max_range)} (MLCANARY_QUERY_MAX_RANGE_SECONDS)"
    min_step = f"{human_duration(limits.min_subquery_step)} (MLCANARY_QUERY_MIN_SUBQUERY_STEP_SECONDS)"

    def visit(node: pp.Expr, reach: timedelta) -> None:
        # reach: the enclosing subqueries' windows; Prometheus evaluates a nested subquery over them too.
        match node:
            case pp.VectorSelector():
                if not _names_its_metric(node):
                    problems.append(
                        f"selector {_shown(node)} does not name its metric, so it may read every "
                        'series in Prometheus: select one metric (metric{...} or {__name__="metric"})'
                    )
            case pp.MatrixSelector():
                if node.range > limits.max_range:
                    problems.append(
                        f"range [{human_duration(node.range)}] of {_shown(node)} is longer than the "
                        f"limit {max_range}"
                    )
            case pp.SubqueryExpr():
                if node.range is not None and node.range > limits.max_range:
                    problems.append(
                        f"subquery window [{human_duration(node.range)}] of {_shown(node)} is longer "
                        f"than the limit {max_range}"
                    )
                if node.step is None:
                    problems.append(
                        f"subquery {_shown(node)} has no resolution: give it explicitly, e.g. "
                        f"[{human_duration(node.range or timedelta(minutes=5))}:1m] (Prometheus would "
                        "use its own evaluation interval)"
                    )
                elif node.step < limits.min_subquery_step:
                    problems.append(
                        f"subquery resolution {human_duration(node.step)} of {_shown(node)} is finer "
                        f"than the floor {min_step}"
                    )
                else:
                    reach = reach + (node.range or timedelta(0))
                    points = reach / node.step
                    if points > limits.max_subquery_points:
                        problems.append(
                            f"subquery {_shown(node)} is evaluated at {points:.0f} points (its window plus "
                            f"the windows of the subqueries around it, at its resolution); at most "
                            f"{limits.max_subquery_points} are allowed (the range limit at the resolution floor)"
                        )
        for child in _children(node):
            visit(child, reach)

    visit(expr, timedelta(0))
    for node in walk(expr):
        if isinstance(node, pp.Call) and node.func.name in IMPLICIT_READS:
            problems.append(f"{node.func.name}() reads series that no selector of the query names")
    if any(isinstance(node, pp.VectorSelector) and node.matchers.or_matchers for node in walk(expr)):
        problems.append("'or' inside a selector's braces is not PromQL that Prometheus runs")
    return problems


# ---------------------------------------------------------------------------------------- scoping


@dataclass(frozen=True)
class Scope:
    """Add ``label="value"`` to every vector selector."""

    label: str
    value: str


def scope_problems(expr: pp.Expr, scope: Scope) -> list[str]:
    """Selectors that already match ``scope.label`` with anything but ``="<scope.value>"``."""
    problems = []
    for selector in selectors(expr):
        for matcher in selector.matchers.matchers:
            if matcher.name == scope.label and not (
                matcher.op == pp.MatchOp.Equal and matcher.value == scope.value
            ):
                problems.append(
                    f"selector {_shown(selector)} matches the label {scope.label} itself "
                    f"({_label(matcher.name)}{_op(matcher.op)}{promql_string(matcher.value)}): queries here "
                    "may only read their own "
                    f'namespace; write {scope.label}="{{{{namespace}}}}" or leave {scope.label} out '
                    "(the operator adds it to every selector)"
                )
    return problems


def scoped(expr: pp.Expr, scope: Scope) -> str:
    """The query with ``scope`` added to every selector, printed and verified by parsing it back."""
    check_label_name(scope.label)
    problems = scope_problems(expr, scope)
    if problems:
        raise QueryTemplateError("; ".join(problems))
    return verified(expr, scope)


def verified(expr: pp.Expr, scope: Scope | None = None) -> str:
    """Print ``expr`` (with ``scope``) and check that the text parses back to the same tree."""
    text = to_promql(expr, scope)
    if canonical(parse(text)) != canonical(expr, scope):
        raise QueryTemplateError(
            f"the query could not be printed back faithfully ({text[:120]}); refusing it"
        )
    return text


# --------------------------------------------------------------------------------------- printing


def _op(op: pp.MatchOp) -> str:
    # MatchOp is not hashable, so no dict.
    for candidate, text in (
        (pp.MatchOp.Equal, "="),
        (pp.MatchOp.NotEqual, "!="),
        (pp.MatchOp.Re, "=~"),
        (pp.MatchOp.NotRe, "!~"),
    ):
        if op == candidate:
            return text
    raise QueryTemplateError(f"unsupported matcher {op}")


def _label(name: str) -> str:
    return name if LABEL_NAME.match(name) else promql_string(name)


def _labels(names: Sequence[str]) -> str:
    return "(" + ", ".join(_label(n) for n in names) + ")"


def _duration(delta: timedelta) -> str:
    if delta < timedelta(0):
        return "-" + format_duration(-delta)
    return format_duration(delta)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(value)


def _matchers(selector: pp.VectorSelector, scope: Scope | None) -> list[pp.Matcher]:
    matchers = list(selector.matchers.matchers)
    if scope is not None and not any(
        m.name == scope.label and m.op == pp.MatchOp.Equal and m.value == scope.value for m in matchers
    ):
        matchers.append(pp.Matcher(pp.MatchOp.Equal, scope.label, scope.value))
    return matchers


def _modifiers(offset: timedelta | None, at: pp.AtModifier | None) -> str:
    text = ""
    if at is not None:
        if at.type == pp.AtModifierType.Start:
            text += " @ start()"
        elif at.type == pp.AtModifierType.End:
            text += " @ end()"
        else:
            assert at.at is not None
            text += f" @ {at.at.timestamp():.3f}"
    if offset is not None:
        text += f" offset {_duration(offset)}"
    return text


def _selector(selector: pp.VectorSelector, scope: Scope | None) -> str:
    if selector.matchers.or_matchers:
        raise QueryTemplateError("'or' inside a selector's braces is not supported")
    name = selector.name
    if name is not None and not _METRIC_NAME.match(name):
        raise QueryTemplateError(f"metric name {name!r} cannot be printed")
    matchers = _matchers(selector, scope)
    braces = "{" + ",".join(f"{_label(m.name)}{_op(m.op)}{promql_string(m.value)}" for m in matchers) + "}"
    return (name or "") + (braces if matchers or name is None else "")


def to_promql(expr: pp.Expr, scope: Scope | None = None) -> str:
    """Print ``expr`` as PromQL, adding ``scope``'s matcher to every vector selector."""

    def out(node: pp.Expr) -> str:
        match node:
            case pp.NumberLiteral():
                return _number(node.val)
            case pp.StringLiteral():
                return promql_string(node.val)
            case pp.VectorSelector():
                return _selector(node, scope) + _modifiers(node.offset, node.at)
            case pp.MatrixSelector():
                vs = node.vector_selector
                return f"{_selector(vs, scope)}[{_duration(node.range)}]{_modifiers(vs.offset, vs.at)}"
            case pp.SubqueryExpr():
                step = _duration(node.step) if node.step is not None else ""
                window = _duration(node.range) if node.range is not None else ""
                return f"{out(node.expr)}[{window}:{step}]{_modifiers(node.offset, node.at)}"
            case pp.ParenExpr():
                return f"({out(node.expr)})"
            case pp.UnaryExpr():
                return f"-{out(node.expr)}"
            case pp.Call():
                return f"{node.func.name}(" + ", ".join(out(a) for a in node.args) + ")"
            case pp.AggregateExpr():
                grouping = ""
                if node.modifier is not None:
                    keyword = "by" if node.modifier.type == pp.AggModifierType.By else "without"
                    grouping = f" {keyword} {_labels(node.modifier.labels)}"
                param = f"{out(node.param)}, " if isinstance(node.param, pp.Expr) else ""
                return (
                    f"{node.op}{grouping} ({param}{out(node.expr)})"
                    if grouping
                    else f"{node.op}({param}{out(node.expr)})"
                )
            case pp.BinaryExpr():
                return f"{out(node.lhs)} {node.op}{_binary_modifier(node.modifier)} {out(node.rhs)}"
        raise QueryTemplateError(f"unsupported PromQL construct {type(node).__name__}")

    return out(expr)


def _binary_modifier(modifier: pp.BinModifier | None) -> str:
    if modifier is None:
        return ""
    fill = modifier.fill_values
    if fill is not None and (fill.lhs is not None or fill.rhs is not None):
        raise QueryTemplateError("fill() in vector matching is not supported")
    text = " bool" if modifier.return_bool else ""
    if modifier.matching is not None:
        keyword = "on" if modifier.matching.type == pp.LabelModifierType.Include else "ignoring"
        text += f" {keyword} {_labels(modifier.matching.labels)}"
    if modifier.card == pp.VectorMatchCardinality.ManyToOne:
        text += f" group_left {_labels(modifier.group_labels or [])}"
    elif modifier.card == pp.VectorMatchCardinality.OneToMany:
        text += f" group_right {_labels(modifier.group_labels or [])}"
    return text


# -------------------------------------------------------------------------------------- canonical

Canonical = tuple[object, ...]


def canonical(expr: pp.Expr, scope: Scope | None = None) -> Canonical:
    """A comparable form of the tree (the library's nodes do not compare by value)."""

    def at_of(at: pp.AtModifier | None) -> object:
        if at is None:
            return None
        return (str(at.type), round(at.at.timestamp() * 1000) if at.at is not None else None)

    def ms(delta: timedelta | None) -> int | None:
        return None if delta is None else round(delta / timedelta(milliseconds=1))

    def selector(vs: pp.VectorSelector) -> Canonical:
        matchers = tuple((str(m.op), m.name, m.value) for m in _matchers(vs, scope))
        return ("selector", vs.name, matchers, ms(vs.offset), at_of(vs.at))

    def of(node: pp.Expr) -> Canonical:
        match node:
            case pp.NumberLiteral():
                return ("number", repr(node.val))
            case pp.StringLiteral():
                return ("string", node.val)
            case pp.VectorSelector():
                return selector(node)
            case pp.MatrixSelector():
                return ("matrix", selector(node.vector_selector), ms(node.range))
            case pp.SubqueryExpr():
                return (
                    "subquery",
                    of(node.expr),
                    ms(node.range),
                    ms(node.step),
                    ms(node.offset),
                    at_of(node.at),
                )
            case pp.ParenExpr():
                return ("paren", of(node.expr))
            case pp.UnaryExpr():
                return ("unary", of(node.expr))
            case pp.Call():
                return ("call", node.func.name, tuple(of(a) for a in node.args))
            case pp.AggregateExpr():
                grouping = (str(node.modifier.type), tuple(node.modifier.labels)) if node.modifier else None
                param = of(node.param) if isinstance(node.param, pp.Expr) else None
                return ("aggregate", str(node.op), grouping, param, of(node.expr))
            case pp.BinaryExpr():
                m = node.modifier
                modifier: object = None
                if m is not None:
                    matching = (str(m.matching.type), tuple(m.matching.labels)) if m.matching else None
                    modifier = (str(m.card), m.return_bool, matching, tuple(m.group_labels or ()))
                return ("binary", str(node.op), modifier, of(node.lhs), of(node.rhs))
        raise QueryTemplateError(f"unsupported PromQL construct {type(node).__name__}")

    return of(expr)

"""The fake Workers Analytics Engine behind the fake Cloudflare API's SQL endpoint.

``POST /accounts/{account}/analytics_engine/sql`` takes the query text as its body, like the real API.
The fake keeps data points per dataset (the columns the real one stores: ``timestamp``,
``_sample_interval``, ``index1``, ``blob1…``, ``double1…``) and answers with a small, faithful evaluator
of the SQL subset the real API documents, parsed — not string-matched — so a query cfops did not mean to
send fails as bad SQL instead of matching by accident:

    SHOW TABLES [FORMAT JSON]
    SELECT expr [AS alias], … FROM dataset [WHERE cond [AND cond …]] [GROUP BY name, …]
        [ORDER BY name [ASC|DESC], …] [LIMIT n] [FORMAT JSON]

    expr: column | 'string' | number | f(expr, …) | expr + - * / expr | NOW() | INTERVAL 'n' unit
    cond: expr (= | != | <> | < | <= | > | >=) expr | expr IN (literal, …)
    functions: SUM, COUNT, AVG, MIN, MAX, IF, quantileWeighted(q, expr, weight), NOW

The answer is ClickHouse's ``FORMAT JSON`` (``meta``, ``data``, ``rows``); 64-bit integer sums are quoted
as strings, as ClickHouse does by default. Errors: an unparsable query or an unknown column, function or
dataset answers HTTP 422 with a one-line text body; a token without the analytics permission answers the
API's JSON error envelope with 403.

Traffic: ``traffic(...)`` makes every deployment of a script generate data points for the versions it
splits, each version's share of ``requests`` by its percentage, with the profile of "new" (the script's
latest uploaded version) or "old" (any other): the split's real traffic, as a test wants it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SQL_ERROR_STATUS = 422


class SqlError(Exception):
    """A query the real API would refuse (the message is the one-line body)."""


@dataclass(frozen=True)
class Profile:
    """A version's behaviour: shares of 5xx and 4xx answers, and latencies spread around ``latency_ms``."""

    error_rate: float = 0.0
    client_error_rate: float = 0.0
    latency_ms: float = 50.0
    sample_interval: int = 1  # each stored point stands for this many requests


@dataclass
class Traffic:
    dataset: str
    requests: int
    new: Profile
    old: Profile
    route: str = "/api/chat"


@dataclass
class FakeAnalyticsEngine:
    datasets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # False: the token lacks Account Analytics Read.
    readable: bool = True
    # The API's clock relative to the test's (a runner whose clock is off sees the opposite skew).
    clock_skew: timedelta = timedelta(0)
    traffic_model: Traffic | None = None
    queries: list[str] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_skew

    # ---------------------------------------------------------------------------------- test controls

    def write(
        self,
        dataset: str,
        version: str,
        *,
        status: int = 200,
        latency_ms: float = 50.0,
        route: str = "/api/chat",
        method: str = "POST",
        sample_interval: int = 1,
        at: datetime | None = None,
        origin: str | None = "user",
    ) -> None:
        """One data point in the layout the Worker writes (immcad_api.analytics).

        ``origin`` None writes a point as a Worker did before the origin field existed: without it (the
        real Analytics Engine then answers an empty string for that blob, as the evaluator does).
        """
        point: dict[str, Any] = {
            "timestamp": at or self.now(),
            "_sample_interval": sample_interval,
            "index1": version,
            "blob1": version,
            "blob2": route,
            "blob3": f"{min(max(status // 100, 1), 5)}xx",
            "blob4": method,
            "double1": float(latency_ms),
            "double2": float(status),
        }
        if origin is not None:
            point["blob5"] = origin
        with self._lock:
            self.datasets.setdefault(dataset, []).append(point)

    def seed(
        self,
        dataset: str,
        version: str,
        requests: int,
        profile: Profile,
        route: str = "/api/chat",
        *,
        origin: str | None = "user",
    ) -> int:
        """``requests`` requests' worth of data points (``requests // sample_interval`` points) with the
        profile's error shares (spread evenly) and latencies from 0.5x to 1.5x ``latency_ms``; ``origin``
        as in ``write`` (``"synthetic"``: cfops's own requests)."""
        points = max(requests // profile.sample_interval, 0)
        errors = round(points * profile.error_rate)
        client = round(points * profile.client_error_rate)
        # Evenly spread: 5xx at every (points/errors)-th point, 4xx evenly among the others.
        error_at = {i * points // errors for i in range(errors)} if errors else set()
        rest = [i for i in range(points) if i not in error_at]
        client_at = {rest[i * len(rest) // client] for i in range(client)} if client else set()
        for i in range(points):
            status = 503 if i in error_at else 404 if i in client_at else 200
            latency = profile.latency_ms * (0.5 + (i % 100) / 99)
            self.write(
                dataset, version, status=status, latency_ms=latency, route=route,
                sample_interval=profile.sample_interval, origin=origin,
            )  # fmt: skip
        return points

    def traffic(self, dataset: str, requests: int, *, new: Profile, old: Profile | None = None) -> None:
        """Every later deployment generates ``requests`` requests' worth of points, split by percentage."""
        self.traffic_model = Traffic(dataset, requests, new, old or new)

    def on_deployment(self, latest_version: str, split: dict[str, float]) -> None:
        model = self.traffic_model
        if model is None:
            return
        for version, percent in split.items():
            profile = model.new if version == latest_version else model.old
            self.seed(model.dataset, version, round(model.requests * percent / 100), profile, model.route)

    # ---------------------------------------------------------------------------------------- queries

    def answer(self, text: str) -> dict[str, Any]:
        """The JSON answer to one query, or SqlError."""
        with self._lock:
            self.queries.append(text)
            tokens = _tokenize(text)
            parser = _Parser(tokens)
            statement = parser.statement()
            if isinstance(statement, _Show):
                rows = [{"dataset": name, "type": "TABLE"} for name in sorted(self.datasets)]
                return _json_answer([("dataset", "String"), ("type", "String")], rows)
            if statement.table not in self.datasets:
                raise SqlError(f"unknown table: {statement.table} does not exist")
            return _run(statement, list(self.datasets[statement.table]), self.now())


# ------------------------------------------------------------------------------------------- tokenizer

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<string>'(?:[^'\\]|\\.)*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|!=|<>|[=<>(),*+\-/]))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.strip().rstrip(";")
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                break
            raise SqlError(f"syntax error at position {position}: {text[position : position + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


# --------------------------------------------------------------------------------------------- parser


@dataclass
class _Expr:
    kind: str  # column, literal, call, binary, interval
    value: Any = None
    args: list[_Expr] = field(default_factory=list)


@dataclass
class _Cond:
    op: str
    left: _Expr
    right: _Expr | list[_Expr]


@dataclass
class _Select:
    items: list[tuple[_Expr, str]]
    table: str
    where: list[_Cond]
    group: list[str]
    order: list[tuple[str, bool]]
    limit: int | None


@dataclass
class _Show:
    pass


_AGGREGATES = {"sum", "count", "avg", "min", "max", "quantileweighted"}
_SCALARS = {"if", "now"}
_KEYWORDS = {
    "select",
    "from",
    "where",
    "group",
    "by",
    "order",
    "limit",
    "format",
    "as",
    "and",
    "in",
    "asc",
    "desc",
}
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "name" and token[1].lower() == word:
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise SqlError(f"syntax error: expected {word.upper()} near {self._near()}")

    def op(self, symbol: str) -> bool:
        token = self.peek()
        if token and token[0] == "op" and token[1] == symbol:
            self.i += 1
            return True
        return False

    def expect_op(self, symbol: str) -> None:
        if not self.op(symbol):
            raise SqlError(f"syntax error: expected {symbol!r} near {self._near()}")

    def name(self) -> str:
        token = self.peek()
        if not token or token[0] != "name" or token[1].lower() in _KEYWORDS:
            raise SqlError(f"syntax error: expected a name near {self._near()}")
        self.i += 1
        return token[1]

    def _near(self) -> str:
        return " ".join(t[1] for t in self.tokens[self.i : self.i + 4]) or "end of query"

    def statement(self) -> _Select | _Show:
        if self.keyword("show"):
            self.expect_keyword("tables")
            self._format()
            return _Show()
        self.expect_keyword("select")
        items = [self._item()]
        while self.op(","):
            items.append(self._item())
        self.expect_keyword("from")
        table = self.name()
        where: list[_Cond] = []
        if self.keyword("where"):
            where.append(self._cond())
            while self.keyword("and"):
                where.append(self._cond())
        group: list[str] = []
        if self.keyword("group"):
            self.expect_keyword("by")
            group.append(self.name())
            while self.op(","):
                group.append(self.name())
        order: list[tuple[str, bool]] = []
        if self.keyword("order"):
            self.expect_keyword("by")
            while True:
                column = self.name()
                descending = self.keyword("desc") or (self.keyword("asc") and False)
                order.append((column, descending))
                if not self.op(","):
                    break
        limit = None
        if self.keyword("limit"):
            token = self.peek()
            if not token or token[0] != "number":
                raise SqlError("syntax error: LIMIT needs a number")
            self.i += 1
            limit = int(token[1])
        self._format()
        return _Select(items, table, where, group, order, limit)

    def _format(self) -> None:
        if self.keyword("format"):
            fmt = self.name()
            if fmt.upper() != "JSON":
                raise SqlError(f"unsupported FORMAT {fmt} (this fake answers JSON only)")
        if self.peek() is not None:
            raise SqlError(f"syntax error: unexpected {self._near()}")

    def _item(self) -> tuple[_Expr, str]:
        start = self.i
        expr = self.expr()
        if self.keyword("as"):
            return expr, self.name()
        return expr, "".join(t[1] for t in self.tokens[start : self.i])

    def _cond(self) -> _Cond:
        left = self.expr()
        if self.keyword("in"):
            self.expect_op("(")
            values = [self.expr()]
            while self.op(","):
                values.append(self.expr())
            self.expect_op(")")
            return _Cond("in", left, values)
        token = self.peek()
        if not token or token[0] != "op" or token[1] not in {"=", "!=", "<>", "<", "<=", ">", ">="}:
            raise SqlError(f"syntax error: expected a comparison near {self._near()}")
        self.i += 1
        return _Cond(token[1], left, self.expr())

    def _argument(self) -> _Expr:
        """A function argument: an expression, or a condition (IF's first argument)."""
        start = self.i
        self.expr()
        token = self.peek()
        is_condition = (
            token and token[0] == "op" and token[1] in {"=", "!=", "<>", "<", "<=", ">", ">="}
        ) or (token and token[0] == "name" and token[1].lower() == "in")
        self.i = start
        return _Expr("cond", self._cond()) if is_condition else self.expr()

    def expr(self) -> _Expr:
        left = self._term()
        while self.peek() and self.peek() in (("op", "+"), ("op", "-")):
            symbol = self.tokens[self.i][1]
            self.i += 1
            left = _Expr("binary", symbol, [left, self._term()])
        return left

    def _term(self) -> _Expr:
        left = self._primary()
        while self.peek() and self.peek() in (("op", "*"), ("op", "/")):
            symbol = self.tokens[self.i][1]
            self.i += 1
            left = _Expr("binary", symbol, [left, self._primary()])
        return left

    def _primary(self) -> _Expr:
        token = self.peek()
        if token is None:
            raise SqlError("syntax error: unexpected end of query")
        kind, text = token
        if kind == "number":
            self.i += 1
            return _Expr("literal", float(text) if "." in text else int(text))
        if kind == "string":
            self.i += 1
            return _Expr("literal", text[1:-1].replace("\\'", "'"))
        if kind == "op" and text == "(":
            self.i += 1
            inner = self.expr()
            self.expect_op(")")
            return inner
        if kind == "name" and text.lower() == "interval":
            self.i += 1
            amount = self._primary()
            unit = self.name().lower()
            if amount.kind != "literal" or unit not in _UNITS:
                raise SqlError(f"syntax error: bad INTERVAL near {self._near()}")
            return _Expr("interval", float(amount.value) * _UNITS[unit])
        name = self.name()
        if self.op("("):
            function = name.lower()
            if function not in _AGGREGATES | _SCALARS:
                raise SqlError(f"unknown function {name}")
            args: list[_Expr] = []
            if not self.op(")"):
                args.append(self._argument())
                while self.op(","):
                    args.append(self._argument())
                self.expect_op(")")
            return _Expr("call", function, args)
        return _Expr("column", name)


# ------------------------------------------------------------------------------------------- evaluator

_COLUMN = re.compile(
    r"^(?:timestamp|_sample_interval|index1|blob(?:[1-9]|1[0-9]|20)|double(?:[1-9]|1[0-9]|20))$"
)
Row = dict[str, Any]


def _value(expr: _Expr, row: Row, now: datetime) -> Any:
    if expr.kind == "literal":
        return expr.value
    if expr.kind == "interval":
        return timedelta(seconds=expr.value)
    if expr.kind == "column":
        if not _COLUMN.match(expr.value):
            raise SqlError(f"unknown column {expr.value}")
        default: Any = "" if expr.value.startswith(("blob", "index")) else 0.0
        return row.get(expr.value, default)
    if expr.kind == "binary":
        a, b = (_value(arg, row, now) for arg in expr.args)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[expr.value]()
    if expr.value == "now":
        return now
    if expr.value == "if":
        if len(expr.args) != 3 or expr.args[0].kind != "cond":
            raise SqlError("IF takes (condition, then, else)")
        return _value(expr.args[1] if _holds(expr.args[0].value, row, now) else expr.args[2], row, now)
    raise SqlError(f"aggregate function {expr.value} is not allowed here")


def _holds(cond: _Cond, row: Row, now: datetime) -> bool:
    left = _value(cond.left, row, now)
    if cond.op == "in":
        assert isinstance(cond.right, list)
        return left in {_value(v, row, now) for v in cond.right}
    assert isinstance(cond.right, _Expr)
    right = _value(cond.right, row, now)
    try:
        return {
            "=": left == right,
            "!=": left != right,
            "<>": left != right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[cond.op]
    except TypeError:
        raise SqlError(f"cannot compare {type(left).__name__} with {type(right).__name__}") from None


def _is_aggregate(expr: _Expr) -> bool:
    return (expr.kind == "call" and expr.value in _AGGREGATES) or any(_is_aggregate(a) for a in expr.args)


def _aggregate(expr: _Expr, rows: list[Row], now: datetime) -> Any:
    if expr.kind != "call" or expr.value not in _AGGREGATES:
        if expr.kind == "binary":
            a, b = (_aggregate(arg, rows, now) for arg in expr.args)
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else float("nan")}[expr.value]
        return _value(expr, rows[0], now) if rows else None
    function, args = expr.value, expr.args
    if function == "count":
        return len(rows)
    if function == "quantileweighted":
        if len(args) != 3 or args[0].kind != "literal":
            raise SqlError("quantileWeighted takes (level, expr, weight)")
        level = float(args[0].value)
        pairs = sorted((float(_value(args[1], r, now)), float(_value(args[2], r, now))) for r in rows)
        total = sum(w for _, w in pairs)
        running = 0.0
        for value, weight in pairs:
            running += weight
            if running >= level * total:
                return value
        return float("nan")
    if len(args) != 1:
        raise SqlError(f"{function.upper()} takes one argument")
    values = [_value(args[0], r, now) for r in rows]
    if function == "sum":
        return sum(values)
    if not values:
        return float("nan")
    return {"avg": lambda: sum(values) / len(values), "min": lambda: min(values), "max": lambda: max(values)}[
        function
    ]()


def _run(statement: _Select, rows: list[Row], now: datetime) -> dict[str, Any]:
    selected = [r for r in rows if all(_holds(c, r, now) for c in statement.where)]
    aliases = {alias: expr for expr, alias in statement.items}
    grouped = bool(statement.group) or any(_is_aggregate(e) for e, _ in statement.items)
    if grouped:
        keys = [aliases.get(name, _Expr("column", name)) for name in statement.group]
        for expr, alias in statement.items:
            if not _is_aggregate(expr) and alias not in statement.group and expr not in keys:
                raise SqlError(f"column {alias} is not under an aggregate function and not in GROUP BY")
        groups: dict[tuple[Any, ...], list[Row]] = {}
        for row in selected:
            groups.setdefault(tuple(_value(k, row, now) for k in keys), []).append(row)
        if not statement.group:
            groups = {(): selected}
        out = [
            {alias: _aggregate(expr, members, now) for expr, alias in statement.items}
            for members in groups.values()
        ]
    else:
        out = [{alias: _value(expr, row, now) for expr, alias in statement.items} for row in selected]
    for column, descending in reversed(statement.order):
        out.sort(key=lambda r: r.get(column), reverse=descending)
    if statement.limit is not None:
        out = out[: statement.limit]
    meta = [(alias, _type(out, alias)) for _, alias in statement.items]
    return _json_answer(meta, out)


def _type(rows: list[Row], column: str) -> str:
    sample = next((r[column] for r in rows if r.get(column) is not None), None)
    if isinstance(sample, bool | int):
        return "UInt64"
    if isinstance(sample, float):
        return "Float64"
    if isinstance(sample, datetime):
        return "DateTime"
    return "String"


def _json_answer(meta: list[tuple[str, str]], rows: list[Row]) -> dict[str, Any]:
    def cell(value: Any) -> Any:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return str(value)  # ClickHouse quotes 64-bit integers in JSON
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(value, float) and value != value:
            return "nan"
        return value

    data = [{k: cell(v) for k, v in row.items()} for row in rows]
    return {
        "meta": [{"name": name, "type": kind} for name, kind in meta],
        "data": data,
        "rows": len(data),
        "rows_before_limit_at_least": len(data),
    }

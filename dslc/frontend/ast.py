"""The `.dl` abstract syntax tree: frozen dataclasses, every node with its span."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..diagnostics import SourceFile, Span


@dataclass(frozen=True)
class Node:
    span: Span


# ---- expressions ----

@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Const(Node):
    value: object  # int | float | str | bool | None


@dataclass(frozen=True)
class ListExpr(Node):
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class TupleExpr(Node):
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class DictExpr(Node):
    keys: tuple[str, ...]
    key_spans: tuple[Span, ...]
    values: tuple["Expr", ...]


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # + - * / // % @ ** == != < <= > >= and or
    left: "Expr"
    right: "Expr"
    op_span: Span


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str  # - + not
    operand: "Expr"


@dataclass(frozen=True)
class Cond(Node):
    cond: "Expr"
    then: "Expr"
    orelse: "Expr"


@dataclass(frozen=True)
class Keyword(Node):
    name: str
    value: "Expr"


@dataclass(frozen=True)
class Call(Node):
    func: "Expr"
    args: tuple["Expr", ...]
    kwargs: tuple[Keyword, ...]


@dataclass(frozen=True)
class Slice(Node):
    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"


@dataclass(frozen=True)
class Index(Node):
    value: "Expr"
    subscripts: tuple["Expr | Slice", ...]


@dataclass(frozen=True)
class Attr(Node):
    value: "Expr"
    name: str
    name_span: Span


@dataclass(frozen=True)
class Pipe(Node):
    stages: tuple["Expr", ...]


@dataclass(frozen=True)
class AsName(Node):
    value: "Expr"
    name: str
    name_span: Span
    # `as "denselayer{i + 1}"`: `name` is the template's text, each pass's name computed from it
    # (frontend/templates.py)
    template: bool = False


Expr = Union[Name, Const, ListExpr, TupleExpr, DictExpr, BinOp, UnaryOp, Cond, Call, Index,
             Attr, Pipe, AsName]


# ---- statements ----

@dataclass(frozen=True)
class InputStmt(Node):
    name: str
    name_span: Span
    shape: Expr | None
    dtype: str | None
    dtype_span: Span | None


@dataclass(frozen=True)
class OutputStmt(Node):
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class ParamStmt(Node):
    name: str
    name_span: Span
    shape: Expr
    init: Expr | None


@dataclass(frozen=True)
class BufferStmt(Node):
    """`buffer pe = expr`, `buffer(persistent=false) pe = expr`: state computed once, in the constructor."""
    name: str
    name_span: Span
    value: Expr
    kwargs: tuple[Keyword, ...] = ()
    args: tuple[Expr, ...] = ()          # positional settings: refused when evaluated


@dataclass(frozen=True)
class ForStmt(Node):
    names: tuple[str, ...]
    name_spans: tuple[Span, ...]
    iterable: Expr
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class RepeatStmt(Node):
    count: Expr
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class IfStmt(Node):
    cond: Expr
    body: tuple["Stmt", ...]
    orelse: tuple["Stmt", ...]


@dataclass(frozen=True)
class StepStmt(Node):
    name: str
    name_span: Span
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class PhaseStmt(Node):
    name: str
    name_span: Span
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class Dotted(Node):
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class FreezeStmt(Node):
    paths: tuple[Dotted, ...]
    freeze: bool  # False for `unfreeze`


@dataclass(frozen=True)
class AssignStmt(Node):
    targets: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True)
class ExprStmt(Node):
    value: Expr


Stmt = Union[InputStmt, OutputStmt, ParamStmt, BufferStmt, ForStmt, RepeatStmt, IfStmt, StepStmt, PhaseStmt,
             FreezeStmt, AssignStmt, ExprStmt]


# ---- declarations ----

@dataclass(frozen=True)
class TypeExpr(Node):
    name: str
    arg: "TypeExpr | None"

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}[{self.arg}]"


@dataclass(frozen=True)
class ParamDecl(Node):
    name: str
    type: TypeExpr | None
    default: Expr | None


@dataclass(frozen=True)
class Import(Node):
    path: str
    path_span: Span


@dataclass(frozen=True)
class ModelDecl(Node):
    name: str
    name_span: Span
    params: tuple[ParamDecl, ...]
    body: tuple[Stmt, ...]
    kind = "model"


@dataclass(frozen=True)
class BlockDecl(Node):
    name: str
    name_span: Span
    params: tuple[ParamDecl, ...]
    body: tuple[Stmt, ...]
    kind = "block"


@dataclass(frozen=True)
class LossDecl(Node):
    name: str
    name_span: Span
    value: Expr
    kind = "loss"


@dataclass(frozen=True)
class TrainDecl(Node):
    name: str
    name_span: Span
    body: tuple[Stmt, ...]
    kind = "train"


@dataclass(frozen=True)
class SweepField(Node):
    """`trials = 30` in a sweep."""
    name: str
    name_span: Span
    value: Expr


@dataclass(frozen=True)
class SweepRange(Node):
    """`optimizer.lr = loguniform(1e-4, 1e-1)` in a sweep's `space`."""
    key: Dotted
    value: Expr


@dataclass(frozen=True)
class SweepDecl(Node):
    """`sweep NAME { plan = p; trials = n; ...; space { KEY = RANGE ... } }`; `spaces`: each `space`
    written (the checker wants exactly one)."""
    name: str
    name_span: Span
    fields: tuple[SweepField, ...]
    spaces: tuple[tuple[SweepRange, ...], ...]
    space_spans: tuple[Span, ...]
    kind = "sweep"


Decl = Union[Import, ModelDecl, BlockDecl, LossDecl, TrainDecl, SweepDecl]


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    file: SourceFile
    decls: tuple[Decl, ...]

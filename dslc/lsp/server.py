"""`dslc lsp`: the language server, over stdin and stdout (pygls): diagnostics, hovers,
definitions, symbols, completions, references, renaming and inlay hints.

Documents are checked on open and on every change (full or incremental sync) in a worker
thread, so the server keeps reading messages meanwhile; changes that arrive during a check are
coalesced into one more check of the newest text. A document that imports a changed open
document is checked again too. A check that fails inside dslc is logged to the editor and
leaves the last diagnostics in place: the server keeps serving.
"""
from __future__ import annotations

import asyncio
import os
import traceback

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from ..diagnostics import Diagnostic, SourceFile, Span
from ..frontend import ast
from ..frontend.parser import keywords
from ..version import __version__
from . import features
from .analysis import Analysis, Checker
from .heap import FrozenHeap

SYMBOL_KINDS = {"model": lsp.SymbolKind.Class, "block": lsp.SymbolKind.Function, "loss": lsp.SymbolKind.Function,
                "train": lsp.SymbolKind.Event}
ITEM_KINDS = {"layer": lsp.CompletionItemKind.Class, "function": lsp.CompletionItemKind.Function,
              "loss": lsp.CompletionItemKind.Function, "model": lsp.CompletionItemKind.Module,
              "block": lsp.CompletionItemKind.Module, "keyword": lsp.CompletionItemKind.Property,
              "field": lsp.CompletionItemKind.Field, "variable": lsp.CompletionItemKind.Variable}


class DslServer(LanguageServer):
    def __init__(self):
        super().__init__("dslc", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.checker = Checker(pause=FrozenHeap())   # the collector out of the way: see heap.py
        self.analyses: dict[str, Analysis] = {}   # uri -> its latest check
        self.parsed: dict[str, Analysis] = {}     # uri -> its latest check whose text parsed
        self.pending: list[str] = []
        self.retired: list = []                  # analyses replaced, freed once the diagnostics are out
        self.busy = False
        self.lock = asyncio.Lock()               # one check at a time: the checker's caches are not shared


server = DslServer()


def uri_path(uri: str) -> str:
    return os.path.abspath(to_fs_path(uri) or uri)


# ---- checking ----

def schedule(ls: DslServer, uri: str) -> None:
    """Check `uri` (and the open documents that import it) soon; one check runs at a time."""
    path = uri_path(uri)
    dependents = [u for u, a in ls.analyses.items() if u != uri and path in a.paths.values()]
    for u in dependents:
        ls.analyses.pop(u)   # its text is the same, but what it imports is not
    for u in [uri, *dependents]:
        if u not in ls.pending:
            ls.pending.append(u)
    if not ls.busy:
        ls.busy = True
        asyncio.get_running_loop().create_task(_drain(ls))


async def _drain(ls: DslServer) -> None:
    try:
        while ls.pending:
            uri = ls.pending.pop(0)
            if uri not in ls.workspace.text_documents:
                continue
            analysis = await analyse(ls, uri)
            if analysis is not None and uri in ls.workspace.text_documents:
                publish(ls, uri, analysis)
            ls.retired.clear()   # freeing the last check's trees and graphs takes milliseconds: after publishing
    finally:
        ls.busy = False


async def analyse(ls: DslServer, uri: str, finished: bool = False) -> Analysis | None:
    """The check of the document's current text (the last one when the text is the same).
    `finished`: with the shapes of the models that stopped at an error too (hovers and inlay
    hints show them; diagnostics do not wait for them)."""
    async with ls.lock:
        text = ls.workspace.get_text_document(uri).source
        analysis = ls.analyses.get(uri)
        if analysis is None or analysis.text != text:
            analysis = await _in_worker(ls, ls.checker.check, uri_path(uri), text)
            if analysis is None:
                return None
            ls.retired += [ls.analyses.get(uri), ls.parsed.get(uri)]
            ls.analyses[uri] = analysis
            if analysis.module is not None:
                ls.parsed[uri] = analysis
        if finished and analysis.unfinished:
            await _in_worker(ls, analysis.finish)
        return analysis


async def _in_worker(ls: DslServer, work, *args):
    """`work(*args)` in a worker thread; None, logged to the editor, if it fails inside dslc."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, work, *args)
    except Exception:  # noqa: BLE001 - a bug in a check must not stop the server
        ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error, "dslc: the check failed:\n"
                                                   + traceback.format_exc()))
        return None


def publish(ls: DslServer, uri: str, analysis: Analysis) -> None:
    items = [to_lsp(ls, analysis, d) for d in analysis.diagnostics]
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, items, version=_version(ls, uri)))


def _version(ls: DslServer, uri: str) -> int | None:
    return ls.workspace.get_text_document(uri).version


def to_lsp(ls: DslServer, analysis: Analysis, d: Diagnostic) -> lsp.Diagnostic:
    """A dslc diagnostic as the editor shows it. One in another file (an imported one) is shown at
    the document's import that leads there, with its place as related information."""
    related = [lsp.DiagnosticRelatedInformation(location(ls, analysis, label.span), label.text) for label in d.labels]
    message = "\n".join([d.message + (f": {d.label}" if d.label else ""), *d.notes] + ([f"help: {d.help}"] if d.help else []))
    span = d.span
    if span is not None and analysis.paths.get(span.file.name) != analysis.path:
        related.insert(0, lsp.DiagnosticRelatedInformation(location(ls, analysis, span), d.message))
        message = f"in {span}: {message}"
        span = _import_span(analysis)
    where = span_range(ls, span) if span is not None else lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    severity = lsp.DiagnosticSeverity.Warning if d.severity == "warning" else lsp.DiagnosticSeverity.Error
    return lsp.Diagnostic(where, message, severity=severity, code=d.code, source="dslc",
                          related_information=related or None)


def _import_span(analysis: Analysis) -> Span | None:
    module = analysis.module
    imports = [d for d in module.decls if isinstance(d, ast.Import)] if module is not None else []
    return imports[0].path_span if imports else None


def span_range(ls: DslServer, span: Span) -> lsp.Range:
    return lsp.Range(position(ls, span.file, span.start), position(ls, span.file, span.end))


def position(ls: DslServer, file: SourceFile, offset: int) -> lsp.Position:
    """A character offset as a line and a column in the units agreed with the client (UTF-16 by default)."""
    line, col = file.line_col(offset)
    before = file.line_text(line)[:col - 1]
    encoding = ls.workspace.position_encoding
    if encoding == lsp.PositionEncodingKind.Utf8:
        units = len(before.encode("utf-8", "surrogatepass"))
    elif encoding == lsp.PositionEncodingKind.Utf32:
        units = len(before)
    else:
        units = len(before.encode("utf-16-le", "surrogatepass")) // 2
    return lsp.Position(line - 1, units)


def location(ls: DslServer, analysis: Analysis, span: Span) -> lsp.Location:
    path = analysis.paths.get(span.file.name) or os.path.abspath(span.file.name)
    return lsp.Location(from_fs_path(path), span_range(ls, span))


# ---- the protocol's requests ----

@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: DslServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.checker.open[uri_path(params.text_document.uri)] = params.text_document.text
    schedule(ls, params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: DslServer, params: lsp.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.checker.open[uri_path(uri)] = ls.workspace.get_text_document(uri).source
    schedule(ls, uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DslServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.checker.open.pop(uri_path(uri), None)
    ls.analyses.pop(uri, None)
    ls.parsed.pop(uri, None)
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))


async def at(ls: DslServer, doc_id, pos: lsp.Position) -> tuple[Analysis | None, int]:
    """The document's check and the cursor's character offset in it."""
    analysis = await analyse(ls, doc_id.uri, finished=True)
    return analysis, ls.workspace.get_text_document(doc_id.uri).offset_at_position(pos)


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
async def hover(ls: DslServer, params: lsp.HoverParams) -> lsp.Hover | None:
    analysis, offset = await at(ls, params.text_document, params.position)
    found = features.hover(analysis, offset) if analysis is not None else None
    if found is None:
        return None
    text, span = found
    return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text),
                     span_range(ls, span) if span is not None else None)


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
async def definition(ls: DslServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    analysis, offset = await at(ls, params.text_document, params.position)
    span = features.definition(analysis, offset) if analysis is not None else None
    return location(ls, analysis, span) if span is not None else None


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
async def document_symbols(ls: DslServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    analysis = await analyse(ls, params.text_document.uri)
    if analysis is None:
        return []
    return [lsp.DocumentSymbol(name, SYMBOL_KINDS[kind], span_range(ls, whole), span_range(ls, named), detail=detail)
            for name, kind, whole, named, detail in features.symbols(analysis)]


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ","]))
async def completion(ls: DslServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    analysis, offset = await at(ls, params.text_document, params.position)
    fallback = ls.parsed.get(params.text_document.uri)
    items = features.completions(analysis, offset, fallback) if analysis is not None else []
    return lsp.CompletionList(False, [
        lsp.CompletionItem(label, kind=ITEM_KINDS.get(kind, lsp.CompletionItemKind.Text), detail=detail or None,
                           documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown, doc) if doc else None)
        for label, kind, detail, doc in items])


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
async def references(ls: DslServer, params: lsp.ReferenceParams) -> list[lsp.Location]:
    analysis, offset = await at(ls, params.text_document, params.position)
    spans = features.references(analysis, offset) if analysis is not None else []
    if spans and not params.context.include_declaration:
        spans = spans[1:] if features.definition(analysis, offset) == spans[0] else spans
    return [location(ls, analysis, s) for s in spans]


@server.feature(lsp.TEXT_DOCUMENT_RENAME)
async def rename(ls: DslServer, params: lsp.RenameParams) -> lsp.WorkspaceEdit | None:
    """Every reference renamed, in every file of the unit; a new name that is not a plain name
    (or is a keyword) changes nothing."""
    if not features.WORD.fullmatch(params.new_name) or params.new_name in keywords():
        raise JsonRpcInvalidParams(f"`{params.new_name}` is not a name dslc accepts")
    analysis, offset = await at(ls, params.text_document, params.position)
    spans = features.references(analysis, offset) if analysis is not None else []
    if not spans:
        return None
    changes: dict = {}
    for span in spans:
        loc = location(ls, analysis, span)
        changes.setdefault(loc.uri, []).append(lsp.TextEdit(loc.range, params.new_name))
    return lsp.WorkspaceEdit(changes=changes)


@server.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
async def inlay_hints(ls: DslServer, params: lsp.InlayHintParams) -> list[lsp.InlayHint]:
    analysis = await analyse(ls, params.text_document.uri, finished=True)
    if analysis is None:
        return []
    doc = ls.workspace.get_text_document(params.text_document.uri)
    start, end = doc.offset_at_position(params.range.start), doc.offset_at_position(params.range.end)
    file = SourceFile("", analysis.text)
    return [lsp.InlayHint(position(ls, file, offset), label, kind=lsp.InlayHintKind.Type)
            for offset, label in features.inlay_hints(analysis, start, end)]


def serve() -> None:
    """Serve over stdin and stdout until the client says exit."""
    server.start_io()

"""`dslc lsp`, driven as an editor drives it: a real client (pytest-lsp) talking to the server
process over stdio. Diagnostics are compared with what `dslc check` reports for the same text;
hovers with torch's own shapes where a model is built (the summary's figures are checked against
torch in test_summary.py; here, the published ResNet-18 count)."""
from __future__ import annotations

import asyncio
import os
import sys

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, make_test_lsp_client

import dslc
from dslc.diagnostics import DslcError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET = os.path.join(ROOT, "specs", "resnet.dl")
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.asyncio(loop_scope="module")


def recording_client() -> LanguageClient:
    """pytest-lsp's client, also keeping every publication's diagnostics by (uri, version)."""
    client = make_test_lsp_client()
    client.published = {}
    handlers = client.protocol.fm.features
    original = handlers[lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS]

    def record(*args):
        params = args[-1]
        client.published[(params.uri, params.version)] = list(params.diagnostics)
        return original(*args)

    handlers[lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS] = record
    return client


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "dslc", "lsp"], server_env=ENV,
                                              client_factory=recording_client), scope="module")
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    yield
    await lsp_client.shutdown_session()


def uri_of(path) -> str:
    return "file://" + os.path.abspath(path)


async def diagnostics_of(client: LanguageClient, uri: str, version: int, timeout: float = 60) -> list[lsp.Diagnostic]:
    """The diagnostics published for `version` of the document (taken: a later wait for the same
    version waits for a new publication)."""
    for _ in range(int(timeout / 0.01)):
        if (uri, version) in client.published:
            return client.published.pop((uri, version))
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no diagnostics for {uri} version {version}")


async def opened(client: LanguageClient, path, text: str | None = None) -> tuple[str, list[lsp.Diagnostic]]:
    uri = uri_of(path)
    text = open(path).read() if text is None else text
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "dl", 1, text)))
    return uri, await diagnostics_of(client, uri, 1)


def at(text: str, needle: str, delta: int = 0) -> lsp.Position:
    """The position of `needle`'s first character (plus `delta`) in `text`."""
    i = text.index(needle) + delta
    return lsp.Position(text.count("\n", 0, i), i - (text.rfind("\n", 0, i) + 1))


async def hover_text(client, uri, pos) -> str:
    h = await client.text_document_hover_async(lsp.HoverParams(lsp.TextDocumentIdentifier(uri), pos))
    return h.contents.value if h is not None else ""


async def test_a_zoo_spec_checks_clean_and_answers_hovers(client: LanguageClient):
    text = open(RESNET).read()
    uri, diags = await opened(client, RESNET)
    assert diags == []
    conv = await hover_text(client, uri, at(text, "Conv2d(64, 7", 2))
    assert "Conv2d(out_channels, kernel_size, stride=1" in conv and "[B, 64, 112, 112] float32" in conv
    model = await hover_text(client, uri, at(text, "model ResNet18", 8))
    assert "11,689,512 parameters" in model and "[B, 3, 224, 224]" in model   # torchvision's resnet18 count
    stage = await hover_text(client, uri, at(text, "BasicStage(128, 2, stride=2)", 1))
    assert "block BasicStage(width: int" in stage and "output here: `[B, 128, 28, 28] float32`" in stage
    declared = await hover_text(client, uri, at(text, "block BottleneckStage", 6))
    assert "called with outputs" in declared and "[B, 2048, 7, 7] float32" in declared and "output here" not in declared
    block_input = await hover_text(client, uri, at(text, "    input x: [B, 3, 224, 224]", 10))
    assert "[B, 3, 224, 224] float32" in block_input


async def test_definitions_and_symbols(client: LanguageClient):
    text = open(RESNET).read()
    uri, _ = await opened(client, RESNET)   # each test opens what it uses (xdist may run it alone)
    loc = await client.text_document_definition_async(lsp.DefinitionParams(
        lsp.TextDocumentIdentifier(uri), at(text, "BasicBlock(width, stride", 3)))
    assert loc.uri == uri and loc.range.start == at(text, "BasicBlock(out: int")
    # a tensor name: the binding in force (BasicBlock's second `h`), and its shapes at every call
    use = at(text, "output relu(h + skip)", len("output relu("))
    loc = await client.text_document_definition_async(lsp.DefinitionParams(lsp.TextDocumentIdentifier(uri), use))
    assert loc.range.start == at(text, "h = h -> Conv2d(out, 3, padding=1")
    h = await hover_text(client, uri, use)
    assert h.startswith("`h`: ") and all(f"[B, {c}, {n}, {n}] float32" in h for c, n in [(64, 56), (128, 28), (512, 7)])
    plus = await hover_text(client, uri, at(text, "output relu(h + skip)", len("output relu(h ")))
    assert "[B, 512, 7, 7] float32" in plus and "[B, 128, 28, 28] float32" in plus
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri)))
    assert [s.name for s in symbols] == ["Downsample", "BasicBlock", "Bottleneck", "BasicStage", "BottleneckStage",
                                         "ResNet18", "ResNet34", "ResNet50"]
    assert symbols[5].kind == lsp.SymbolKind.Class and symbols[5].selection_range.start == at(text, "ResNet18(classes")


async def test_completions(client: LanguageClient):
    text = open(RESNET).read()
    uri, _ = await opened(client, RESNET)   # each test opens what it uses (xdist may run it alone)
    inside = at(text, "Conv2d(64, 7, ", len("Conv2d(64, 7, "))
    items = await client.text_document_completion_async(lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), inside))
    labels = {i.label: i for i in items.items}
    assert {"stride=", "padding=", "bias="} <= set(labels) and "Linear" not in labels
    line = at(text, "    AdaptiveAvgPool2d(1)", 4)
    items = await client.text_document_completion_async(lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), line))
    labels = {i.label: i for i in items.items}
    assert "Linear(out_features, bias=true)" in labels["Linear"].detail and labels["Linear"].documentation.value
    assert {"BasicBlock", "BasicStage", "x", "classes"} <= set(labels)


BROKEN = """model M(classes: int = 10) {
    input x: [B, 3, 32, 32]
    h = x -> Conv2d(16, 3) -> ReLU()
    output h -> Linear(classes) -> Linearr(4)
}
"""


def check_codes(tmp_path, text: str) -> list[str]:
    """What `dslc check` reports for the text (through the API the command uses)."""
    path = tmp_path / "ref.dl"
    path.write_text(text)
    try:
        prog = dslc.load(str(path))
    except DslcError as e:
        return sorted(e.codes)
    return sorted(w.code for w in prog.warnings)


async def test_diagnostics_follow_edits_and_garbage_keeps_the_server_up(client: LanguageClient, tmp_path):
    path = tmp_path / "broken.dl"
    uri, diags = await opened(client, path, BROKEN)
    assert diags and sorted(d.code for d in diags) == check_codes(tmp_path, BROKEN)
    typo = next(d for d in diags if "Linearr" in d.message)
    assert typo.range.start == at(BROKEN, "Linearr") and typo.severity == lsp.DiagnosticSeverity.Error
    # the model does not evaluate, but the shapes above its error still show
    assert "[B, 16, 30, 30] float32" in await hover_text(client, uri, at(BROKEN, "h = x", 0))
    assert "does not evaluate" in await hover_text(client, uri, at(BROKEN, "model M", 6))
    # an incremental edit fixes the typo
    fix = lsp.TextDocumentContentChangePartial(lsp.Range(at(BROKEN, "Linearr"), at(BROKEN, "Linearr", 7)), "Linear")
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=2), [fix]))
    fixed = BROKEN.replace("Linearr", "Linear")
    assert sorted(d.code for d in await diagnostics_of(client, uri, 2)) == check_codes(tmp_path, fixed)
    # garbage, as a whole-text change: a syntax error, and the server still answers
    garbage = "model {{ ] ->\x7f \u00e9\U0001F600 (((\n" * 3
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=3), [lsp.TextDocumentContentChangeWholeDocument(garbage)]))
    diags = await diagnostics_of(client, uri, 3)
    assert diags and sorted(d.code for d in diags) == check_codes(tmp_path, garbage)
    assert await hover_text(client, uri, lsp.Position(0, 2)) == ""
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=4), [lsp.TextDocumentContentChangeWholeDocument(fixed)]))
    assert await diagnostics_of(client, uri, 4) == []
    assert "[B, 16, 30, 30] float32" in await hover_text(client, uri, at(fixed, "h = x", 0))


LIB = """block Unit(out: int) {
    Linear(out)
    ReLU()
}
"""
MAIN = """import "lib.dl"

model Net(classes: int = 10) {
    input x: [B, 8]
    Unit(32)
    Linear(classes)
}
"""


async def test_an_open_imported_document_is_read_unsaved_and_its_errors_reach_the_importer(client, tmp_path):
    (tmp_path / "lib.dl").write_text("this file on disk does not parse {")   # the editor's text wins
    lib_uri, lib_diags = await opened(client, tmp_path / "lib.dl", LIB)
    main_uri, main_diags = await opened(client, tmp_path / "main.dl", MAIN)
    assert lib_diags == [] and main_diags == []
    assert "[B, 32] float32" in await hover_text(client, main_uri, at(MAIN, "Unit(32)", 1))
    loc = await client.text_document_definition_async(lsp.DefinitionParams(
        lsp.TextDocumentIdentifier(main_uri), at(MAIN, "Unit(32)", 1)))
    assert loc.uri == lib_uri and loc.range.start == at(LIB, "Unit(out")
    # breaking the open library re-checks the document that imports it
    broken = LIB.replace("Linear(out)", "Linear(out, bogus=1)")
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=lib_uri, version=2), [lsp.TextDocumentContentChangeWholeDocument(broken)]))
    diags = await diagnostics_of(client, main_uri, 1)
    (tmp_path / "lib.dl").write_text(broken)
    assert [d.code for d in diags] == check_codes_at(tmp_path / "main.dl", MAIN)
    assert diags[0].range.start == at(MAIN, '"lib.dl"') and diags[0].message.startswith("in ")
    assert diags[0].related_information[0].location.uri == lib_uri
    assert diags[0].related_information[0].location.range.start == at(broken, "bogus=1")


def check_codes_at(path, text: str) -> list[str]:
    path.write_text(text)
    try:
        return sorted(w.code for w in dslc.load(str(path)).warnings)
    except DslcError as e:
        return sorted(e.codes)


TWICE = """block Relu2() {
    ReLU()
}

block Relu2() {
    ReLU()
}

model LayerNorm() {
    input x: [B, 4]
    Linear(4)
}
"""


async def test_secondary_labels_are_related_information_and_warnings_are_warnings(client, tmp_path):
    uri, diags = await opened(client, tmp_path / "twice.dl", TWICE)
    assert sorted(d.code for d in diags) == check_codes(tmp_path, TWICE) == ["E0204"]
    twice = diags[0]
    assert twice.range.start == at(TWICE, "Relu2", TWICE.index("Relu2", 10) - TWICE.index("Relu2"))
    assert twice.related_information[0].location.range.start == at(TWICE, "Relu2")
    assert "first defined here" in twice.related_information[0].message
    fixed = TWICE.replace("block Relu2() {\n    ReLU()\n}\n\n", "", 1)
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=2), [lsp.TextDocumentContentChangeWholeDocument(fixed)]))
    diags = await diagnostics_of(client, uri, 2)
    assert [d.code for d in diags] == check_codes(tmp_path, fixed) == ["W0201"]
    assert diags[0].severity == lsp.DiagnosticSeverity.Warning and diags[0].range.start == at(fixed, "LayerNorm")


WIDE = """# a comment with wide characters: 𝒳 → 𝒴
model Wide() {
    input x: [B, 4]
    y = x -> Linear(3)  # 😀
    output y -> Softmax(dim=1) -> Lineaar(2)
}
"""


async def test_columns_are_utf16_code_units(client, tmp_path):
    text = WIDE.replace("model Wide() {", "model Wide() { # 😀😀", 1)
    uri, diags = await opened(client, tmp_path / "wide.dl", text)
    bad = next(d for d in diags if "Lineaar" in d.message)
    line = text.splitlines()[bad.range.start.line]
    assert bad.range.start.character == len(line[:line.index("Lineaar")].encode("utf-16-le")) // 2
    hover = await hover_text(client, uri, lsp.Position(3, len("    y = x -> Lin")))
    assert "Linear(out_features" in hover


PLAN = """import "{mlp}"

train Fit {{
    model = MLP(hidden=32, classes=10)
    data = digits(val=0.1)
    loss = cross_entropy(out, batch.y)
    optimizer = AdamW(lr=1e-3)
    epochs = 1
}}
"""


async def test_plan_fields_and_catalog_keywords_complete(client, tmp_path):
    text = PLAN.format(mlp=os.path.join(ROOT, "specs", "mlp.dl"))
    uri, diags = await opened(client, tmp_path / "plan.dl", text)
    assert diags == []
    items = await client.text_document_completion_async(lsp.CompletionParams(
        lsp.TextDocumentIdentifier(uri), at(text, "    epochs", 4)))
    labels = {i.label: i for i in items.items}
    assert {"batch_size", "optimizer", "schedule", "epochs"} <= set(labels) and "Conv2d" not in labels
    items = await client.text_document_completion_async(lsp.CompletionParams(
        lsp.TextDocumentIdentifier(uri), at(text, "AdamW(lr=1e-3)", len("AdamW("))))
    assert {"lr=", "weight_decay="} <= {i.label for i in items.items}
    assert "AdamW(lr=" in await hover_text(client, uri, at(text, "AdamW", 1))
    items = await client.text_document_completion_async(lsp.CompletionParams(
        lsp.TextDocumentIdentifier(uri), at(text, "MLP(hidden", len("MLP("))))
    assert {i.label for i in items.items} == {"hidden=", "classes="}
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri)))
    assert [(s.name, s.kind) for s in symbols] == [("Fit", lsp.SymbolKind.Event)]


async def test_references_rename_and_inlay_hints(client: LanguageClient):
    text = open(RESNET).read()
    uri, _ = await opened(client, RESNET)   # each test opens what it uses (xdist may run it alone)
    doc = lsp.TextDocumentIdentifier(uri)
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        context=lsp.ReferenceContext(include_declaration=True), text_document=doc, position=at(text, "block BasicBlock", 6)))
    starts = sorted((r.range.start.line, r.range.start.character) for r in refs)
    expected = sorted((p.line, p.character) for p in [at(text, "BasicBlock(out"), at(text, "BasicBlock(width, stride")])
    assert starts == expected
    # renaming BasicBlock's `h` leaves Bottleneck's alone
    h = at(text, "h = x -> Conv2d(out, 3")
    edit = await client.text_document_rename_async(lsp.RenameParams(text_document=doc, position=h, new_name="y"))
    lines = sorted({e.range.start.line for e in edit.changes[uri]})
    uses = [at(text, "h = h -> Conv2d(out, 3").line, at(text, "output relu(h + skip)").line]
    assert lines == [h.line] + uses and len(edit.changes[uri]) == 4
    assert all(text.splitlines()[e.range.start.line][e.range.start.character:e.range.end.character] == "h"
               for e in edit.changes[uri])
    with pytest.raises(Exception, match="not a name"):
        await client.text_document_rename_async(lsp.RenameParams(text_document=doc, position=h, new_name="model"))
    lenet = os.path.join(ROOT, "specs", "lenet.dl")
    source = open(lenet).read()
    lenet_uri, _ = await opened(client, lenet)
    hints = await client.text_document_inlay_hint_async(lsp.InlayHintParams(
        lsp.TextDocumentIdentifier(lenet_uri), lsp.Range(lsp.Position(0, 0), lsp.Position(len(source.splitlines()), 0))))
    by_line = {source.splitlines()[x.position.line].strip(): x.label.strip() for x in hints}
    assert by_line["Conv2d(6, 5) as c1"] == "[B, 6, 28, 28]"
    assert by_line["AvgPool2d(2) as s4"] == "[B, 16, 5, 5]"
    assert by_line["Linear(classes) as classifier"] == "[B, 10]"
    end = next(x for x in hints if x.label.strip() == "[B, 6, 28, 28]").position
    assert end == at(source, "Conv2d(6, 5) as c1", len("Conv2d(6, 5) as c1"))


async def test_completion_mid_edit_uses_the_last_text_that_parsed(client: LanguageClient, tmp_path):
    (tmp_path / "lib.dl").write_text(LIB)
    uri, diags = await opened(client, tmp_path / "edit.dl", MAIN)
    assert diags == []
    typing = MAIN.replace("    Linear(classes)\n", "    Unit(\n    Linear(classes)\n")
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=2), [lsp.TextDocumentContentChangeWholeDocument(typing)]))
    diags = await diagnostics_of(client, uri, 2)
    assert sorted(d.code for d in diags) == check_codes(tmp_path, typing) and diags[0].code.startswith("E01")
    items = await client.text_document_completion_async(lsp.CompletionParams(
        lsp.TextDocumentIdentifier(uri), at(typing, "Unit(\n", len("Unit("))))
    assert [i.label for i in items.items] == ["out="]
    items = await client.text_document_completion_async(lsp.CompletionParams(
        lsp.TextDocumentIdentifier(uri), at(typing, "    Unit(32)", 4)))
    assert {"Unit", "Net", "x", "classes", "Conv2d"} <= {i.label for i in items.items}


TWO = """model Left(classes: int = 10) {
    input x: [B, 8]
    Linear(32)
    ReLU()
    Linear(classes)
}

model Right(width: int = 16) {
    input x: [B, 4]
    Linear(width)
}
"""


async def test_a_model_the_check_skipped_still_shows_its_shapes(client: LanguageClient, tmp_path):
    """After an edit inside Right, Left (clean, unchanged) is not evaluated for the diagnostics, yet its
    hover has its parameter count and its layers' shapes (evaluated when the hover asks)."""
    uri, diags = await opened(client, tmp_path / "two.dl", TWO)
    assert diags == []
    edit = lsp.TextDocumentContentChangePartial(lsp.Range(at(TWO, "Linear(width)", 7), at(TWO, "Linear(width)", 12)), "2 * width")
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=2), [edit]))
    assert await diagnostics_of(client, uri, 2) == []
    edited = TWO.replace("Linear(width)", "Linear(2 * width)")
    assert "618 parameters" in await hover_text(client, uri, at(edited, "model Left", 6))   # 8*32+32 + 32*10+10
    assert "[B, 32] float32" in await hover_text(client, uri, at(edited, "Linear(32)", 1))
    assert "[B, 32] float32" in await hover_text(client, uri, at(edited, "Linear(2 * width)", 1))
